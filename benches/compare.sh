#!/usr/bin/env bash
# vigil against the plain Python pipeline (benches/python_pipeline.py), on the same clip, streams and
# machine, one after the other in one run. The Python pipeline is a benchmark fixture: its packages
# go into a venv of its own (target/python-bench-venv), never into the project.
#
#   bash benches/compare.sh [--clip FILE] [--streams 4] [--pipeline pipelines/demo.toml]
#
# Prints a Markdown table: analysed fps, CPU ms per analysed frame and peak RSS of each, and the
# ratios. Needs a release build (`cargo build --release`) and python3-venv.
set -euo pipefail
cd "$(dirname "$0")/.."
CLIP=../shared/data/videos/intel_one-by-one-person-detection.mp4
STREAMS=4
PIPELINE=pipelines/demo.toml
while [ $# -gt 0 ]; do
  case "$1" in
    --clip) CLIP=$2; shift 2 ;;
    --streams) STREAMS=$2; shift 2 ;;
    --pipeline) PIPELINE=$2; shift 2 ;;
    *) echo "compare.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -f "$CLIP" ] || { echo "compare.sh: clip $CLIP not found (the default is in ../shared/data, see DATA.md; pass --clip)" >&2; exit 2; }
VIGIL=target/release/vigil
[ -x "$VIGIL" ] || { echo "compare.sh: $VIGIL missing: run cargo build --release first" >&2; exit 2; }
VENV=target/python-bench-venv
ORT_VERSION=$(sed -n 's/^ORT_VERSION=//p' .ci/install)
if ! $VENV/bin/python -c "import cv2, numpy, onnxruntime" 2>/dev/null; then
  echo "[compare] venv $VENV: onnxruntime==$ORT_VERSION opencv-python-headless numpy" >&2
  rm -rf $VENV
  python3 -m venv $VENV
  $VENV/bin/python -m pip install -q --disable-pip-version-check "onnxruntime==$ORT_VERSION" opencv-python-headless numpy
fi
# the face detector input width and thresholds of the pipeline's first no_mask rule
rule() { python3 -c "
import tomllib,sys
c=tomllib.load(open(sys.argv[1],'rb'))['cameras'][0]
r=[r for r in c.get('rules',[]) if r.get('kind')=='no_mask'][0]
print(r.get('$1', $2))" "$PIPELINE"; }
IW=$(rule input_width 960); FT=$(rule face_threshold 0.7); MF=$(rule min_face_px 24)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
echo "[compare] vigil bench --streams $STREAMS" >&2
$VIGIL bench --pipeline "$PIPELINE" --streams "$STREAMS" --clip "$CLIP" --json "$tmp/vigil.json" >&2
echo "[compare] python pipeline, $STREAMS streams" >&2
$VENV/bin/python benches/python_pipeline.py --clip "$CLIP" --streams "$STREAMS" --input-width "$IW" \
  --face-threshold "$FT" --min-face-px "$MF" --threads 1 | sed -n 's/^PYBENCH //p' > "$tmp/py1.json"
python3 - "$tmp" "$CLIP" <<'PY'
import json, sys, os
tmp, clip = sys.argv[1], sys.argv[2]
v = json.load(open(os.path.join(tmp, "vigil.json")))
run = v["rows"][0]["run"]
pys = [json.load(open(os.path.join(tmp, f))) for f in ("py1.json",)]
print(f"machine: {v['machine']}, {v['cores']} cores; clip {clip}; {run['streams']} streams\n")
print("| pipeline | analysed frames | analysed fps | CPU ms / frame | peak RSS MB |")
print("| --- | --- | --- | --- | --- |")
print(f"| vigil (whole worker: mask, gate, track, rules, evidence) | {run['analysed']} | {run['fps']:.1f} | {run['cpu_ms_per_frame']:.1f} | {run['peak_rss_mb']:.0f} |")
for p in pys:
    print(f"| Python: OpenCV + onnxruntime, {p['threads']} intra-op thread(s) | {p['analysed']} | {p['fps']:.1f} | {p['cpu_ms_per_frame']:.1f} | {p['peak_rss_mb']:.0f} |")
best = pys[0]
print(f"\nvigil / Python: {run['fps'] / best['fps']:.2f}x the analysed fps; peak RSS {run['peak_rss_mb'] / best['peak_rss_mb']:.2f}x "
      f"(vigil {run['peak_rss_mb']:.0f} MB, Python {best['peak_rss_mb']:.0f} MB)")
PY
