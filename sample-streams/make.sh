#!/usr/bin/env bash
# Regenerates the bundled sample clips from scikit-image's sample photos (public domain / CC0, shipped
# inside the scikit-image wheel on PyPI). Needs python3 with scikit-image and numpy, and gst-launch-1.0
# with x264enc (Debian: gstreamer1.0-tools, gstreamer1.0-plugins-ugly). See README.md beside this file.
set -euo pipefail
cd "$(dirname "$0")"
W=640; H=360; FPS=25
make_clip() { # name photo seconds scale
  local name=$1 photo=$2 secs=$3 scale=$4
  python3 - "$photo" "$secs" "$scale" $W $H $FPS <<'PY' | gst-launch-1.0 -q fdsrc fd=0 blocksize=$((W*H*3)) \
    ! rawvideoparse width=$W height=$H format=rgb framerate=$FPS/1 ! videoconvert ! video/x-raw,format=I420 \
    ! x264enc key-int-max=$FPS bframes=0 speed-preset=slow pass=qual quantizer=24 \
    ! video/x-h264,profile=main ! h264parse ! mp4mux ! filesink location="$name.mp4"
import sys, math
import numpy as np
from skimage import data, transform, color
photo, secs, scale, W, H, fps = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), *map(int, sys.argv[4:7])
img = getattr(data, photo)()
if img.ndim == 2:
    img = color.gray2rgb(img)
img = img[..., :3]
h, w = img.shape[:2]
s = max(W / w, H / h) * scale
big = (transform.resize(img, (round(h * s), round(w * s)), anti_aliasing=True) * 255).astype(np.uint8)
bh, bw = big.shape[:2]
n = int(secs * fps)
out = sys.stdout.buffer
for i in range(n):
    t = 0.5 - 0.5 * math.cos(2 * math.pi * i / n)     # slow pan there and back
    x = int(round(t * (bw - W))); y = int(round(t * 0.15 * (bh - H)))
    out.write(np.ascontiguousarray(big[y:y + H, x:x + W]).tobytes())
PY
  echo "$name.mp4: $(stat -c %s "$name.mp4") bytes"
}
make_clip astronaut-pan astronaut 12 1.15
make_clip camera-pan    camera    12 1.15
make_clip coffee-pan    coffee    12 1.0
make_clip chelsea-pan   chelsea   12 1.0
