"""Derives mask-classifier-mobilenetv2-features.onnx from the vendored classifier.

The graph, weights and the `probs` output are unchanged; one output is added: `features`, the
1280-d MobileNetV2 backbone embedding after global average pooling (`model/flatten/Reshape:0`, the
input of the classifier's Dense-128 head). `vigil fit` fits a small head on it; `vigil` loads the
derived file like any model (its SHA-256 is in its manifest).

Run: pip install onnx && python3 models/make_features_model.py
"""
import hashlib
import pathlib

import onnx
from onnx import helper, TensorProto

here = pathlib.Path(__file__).parent
src = here / "mask-classifier-mobilenetv2.onnx"
dst = here / "mask-classifier-mobilenetv2-features.onnx"
m = onnx.load(str(src))
g = m.graph
g.node.append(helper.make_node("Identity", ["model/flatten/Reshape:0"], ["features"], name="features_out"))
g.output.append(helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 1280]))
onnx.checker.check_model(m)
onnx.save(m, str(dst))
print(dst.name, hashlib.sha256(dst.read_bytes()).hexdigest())
