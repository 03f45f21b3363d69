"""Derives mask-classifier-mobilenetv2-features.onnx from the vendored classifier.

The graph, weights and the `probs` output are unchanged; one output is added: `features`, the
1280-d MobileNetV2 backbone embedding after global average pooling (`model/flatten/Reshape:0`, the
input of the classifier's Dense-128 head). `vigil fit` fits a small head on it; `vigil` loads the
derived file like any model (its SHA-256 is in its manifest).

With `--multi-layer` it writes mask-classifier-mobilenetv2-features-ml.onnx instead, whose
`features` joins features from more than one layer (a lever of issue #16, measured, not shipped):
the 1280-d embedding, the classifier's own Dense-128 layer after its ReLU (trained on masks), and
the global average pool of two earlier blocks (block 12: 96 channels at 14x14, block 15: 160 at
7x7): 1664 values.

Run: pip install onnx && python3 models/make_features_model.py [--multi-layer]
"""
import hashlib
import pathlib
import sys

import onnx
from onnx import helper, TensorProto

here = pathlib.Path(__file__).parent
src = here / "mask-classifier-mobilenetv2.onnx"
multi = "--multi-layer" in sys.argv[1:]
dst = here / ("mask-classifier-mobilenetv2-features-ml.onnx" if multi else "mask-classifier-mobilenetv2-features.onnx")
m = onnx.load(str(src))
g = m.graph
if not multi:
    g.node.append(helper.make_node("Identity", ["model/flatten/Reshape:0"], ["features"], name="features_out"))
    g.output.append(helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 1280]))
else:
    parts = ["model/flatten/Reshape:0", "model/dense/Relu:0"]
    for block in ("model/block_12_add/add:0", "model/block_15_add/add:0"):
        stem = block.split("/")[1]
        g.node.append(helper.make_node("GlobalAveragePool", [block], [stem + "_gap"], name=stem + "_gap"))
        g.node.append(helper.make_node("Flatten", [stem + "_gap"], [stem + "_flat"], name=stem + "_flat", axis=1))
        parts.append(stem + "_flat")
    g.node.append(helper.make_node("Concat", parts, ["features"], name="features_out", axis=1))
    g.output.append(helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 1664]))
onnx.checker.check_model(m)
onnx.save(m, str(dst))
sha = hashlib.sha256(dst.read_bytes()).hexdigest()
print(dst.name, sha)
if multi:
    # its manifest: the single-layer model's, with this file's id, hash and provenance
    base = (here / "mask-classifier-mobilenetv2-features.toml").read_text().splitlines()
    body = [line for line in base if not line.startswith("#")]
    fields = {"id": dst.stem, "file": dst.name, "sha256": sha,
              "source": "derived from mask-classifier-mobilenetv2.onnx by models/make_features_model.py --multi-layer"}
    out = ["# Made by make_features_model.py --multi-layer (not vendored: features from four layers, 1664 values)."]
    for line in body:
        key = line.split("=", 1)[0].strip()
        out.append(f'{key} = "{fields[key]}"' if key in fields and "=" in line else line)
    (here / (dst.stem + ".toml")).write_text("\n".join(out) + "\n")
