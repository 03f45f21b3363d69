#!/usr/bin/env python3
"""The plain Python pipeline people write instead of vigil: a benchmark fixture, never a dependency.

OpenCV decodes each stream, keeps `--fps` analysis frames per second of video, scales them to
`--width`, and onnxruntime runs the same two models vigil's no_mask rule runs (CenterFace on the
frame zoomed to `--input-width`, the MobileNetV2 mask classifier on every face of at least
`--min-face-px`). One thread per stream, as fast as it can (every analysis frame analysed), the two
sessions shared by all threads, `--threads` intra-op threads each. No privacy mask, no tracking, no
clip, no evidence: it is the lower bound of what such a worker does.

Prints one line `PYBENCH {json}`: streams, analysed frames, wall s, fps, CPU s, peak RSS MB.
Run through benches/compare.sh, which installs onnxruntime, opencv-python-headless and numpy into a
venv of its own.
"""
import argparse
import json
import os
import resource
import threading
import time

import cv2
import numpy as np
import onnxruntime as ort


def centerface_faces(out, in_w, in_h, sx, sy, threshold):
    heat, scale, offset = out[0][0, 0], out[1][0], out[2][0]
    rows, cols = np.where(heat > threshold)
    boxes = []
    for r, c in zip(rows, cols):
        bh, bw = np.exp(scale[0, r, c]) * 4, np.exp(scale[1, r, c]) * 4
        cy, cx = (r + offset[0, r, c] + 0.5) * 4, (c + offset[1, r, c] + 0.5) * 4
        x1, y1 = max(0.0, cx - bw / 2), max(0.0, cy - bh / 2)
        x2, y2 = min(in_w, cx + bw / 2), min(in_h, cy + bh / 2)
        boxes.append((x1 / sx, y1 / sy, x2 / sx, y2 / sy, float(heat[r, c])))
    boxes.sort(key=lambda b: -b[4])
    kept = []
    for b in boxes:  # greedy NMS at IoU 0.3, as vigil decodes CenterFace
        ok = True
        for k in kept:
            ix = max(0.0, min(b[2], k[2]) - max(b[0], k[0]))
            iy = max(0.0, min(b[3], k[3]) - max(b[1], k[1]))
            inter = ix * iy
            union = (b[2] - b[0]) * (b[3] - b[1]) + (k[2] - k[0]) * (k[3] - k[1]) - inter
            if union > 0 and inter / union > 0.3:
                ok = False
                break
        if ok:
            kept.append(b)
    return kept


def stream(a, face, mask, counts, i):
    cap = cv2.VideoCapture(a.clip)
    src_fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    step = max(1.0, src_fps / a.fps)
    face_in = face.get_inputs()[0].name
    mask_in = mask.get_inputs()[0].name
    n, k, nxt = 0, 0, 0.0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        k += 1
        if k - 1 < nxt:
            continue
        nxt += step
        h0, w0 = bgr.shape[:2]
        w, h = a.width, int(round(h0 * a.width / w0)) // 2 * 2
        rgb = cv2.cvtColor(cv2.resize(bgr, (w, h), interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB)
        in_w = (a.input_width + 31) // 32 * 32
        in_h = (int(h * a.input_width / w) + 31) // 32 * 32
        x = cv2.resize(rgb, (in_w, in_h), interpolation=cv2.INTER_LINEAR)
        x = np.ascontiguousarray(x.transpose(2, 0, 1)[None].astype(np.float32))
        out = face.run(None, {face_in: x})
        faces = centerface_faces(out, in_w, in_h, in_w / w, in_h / h, a.face_threshold)
        crops = []
        for x1, y1, x2, y2, _ in faces:
            if min(x2 - x1, y2 - y1) < a.min_face_px:
                continue
            c = rgb[int(y1):int(y2), int(x1):int(x2)]
            if c.size == 0:
                continue
            crops.append(cv2.resize(c, (224, 224), interpolation=cv2.INTER_LINEAR))
        if crops:
            batch = (np.stack(crops).astype(np.float32) / 127.5) - 1.0
            mask.run(None, {mask_in: batch})
        n += 1
    counts[i] = n


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", required=True)
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--models", default=os.path.join(os.path.dirname(__file__), "..", "models"))
    ap.add_argument("--fps", type=float, default=5)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--input-width", type=int, default=960)
    ap.add_argument("--face-threshold", type=float, default=0.7)
    ap.add_argument("--min-face-px", type=float, default=24)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    if not os.path.isfile(a.clip):
        raise SystemExit(f"python_pipeline: {a.clip}: no such file")
    cv2.setNumThreads(1)
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    prov = ["CPUExecutionProvider"]
    face = ort.InferenceSession(os.path.join(a.models, "centerface.onnx"), so, providers=prov)
    mask = ort.InferenceSession(os.path.join(a.models, "mask-classifier-mobilenetv2.onnx"), so, providers=prov)
    counts = [0] * a.streams
    t0, c0 = time.monotonic(), time.process_time()
    ts = [threading.Thread(target=stream, args=(a, face, mask, counts, i)) for i in range(a.streams)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall, cpu = time.monotonic() - t0, time.process_time() - c0
    analysed = sum(counts)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print("PYBENCH " + json.dumps({
        "streams": a.streams, "analysed": analysed, "wall_s": wall, "fps": analysed / wall if wall else 0.0,
        "cpu_s": cpu, "cpu_ms_per_frame": cpu * 1e3 / max(1, analysed), "peak_rss_mb": rss,
        "input_width": a.input_width, "threads": a.threads,
    }), flush=True)


if __name__ == "__main__":
    main()
