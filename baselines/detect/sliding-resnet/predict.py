"""Sliding-window detector of the ``sliding-resnet`` baseline (``python`` format; numpy and onnxruntime only).

A lens classifier trained on 101 x 101 cut-outs (``model.onnx``: (N, bands, 101, 101) e-/s -> (N,) lens
probability) scores a grid of windows over each tile (``stride`` pixels apart, the last row and column flush with
the tile's edge); each window's score sits at its centre. Non-maximum suppression keeps the best-scoring window
centres at least ``nms_radius`` pixels apart, each moved to the score-weighted mean of the window centres within
one stride of it (the grid is coarser than the matching radius). ``config.json`` (written by train.py) holds
``window``, ``stride``, ``nms_radius`` (pixels) and ``max_candidates`` (K)."""

import json

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def load(model_dir):
    import onnxruntime as ort

    with open(f"{model_dir}/config.json") as f:
        cfg = json.load(f)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(cfg.get("threads", 0))
    sess = ort.InferenceSession(f"{model_dir}/model.onnx", opts, providers=["CPUExecutionProvider"])
    return {"session": sess, **cfg}


def grid(size, window, stride):
    """Top-left offsets of the windows along one axis: 0, stride, ... and the last one flush with the edge."""
    last = size - window
    if last < 0:
        raise ValueError(f"tile of {size} pixels is smaller than the {window}-pixel window")
    pos = np.arange(0, last + 1, stride)
    return pos if pos[-1] == last else np.append(pos, last)


def nms(x, y, score, radius, k):
    """Indices of the points kept by greedy non-maximum suppression, best score first: a point is dropped when a
    better-scoring kept point lies within ``radius`` (strictly closer); at most ``k`` are kept."""
    order = np.argsort(-np.asarray(score), kind="stable")
    keep = []
    r2 = float(radius) ** 2
    for i in order:
        if len(keep) >= k:
            break
        if keep:
            kept = np.asarray(keep)
            if np.any((x[kept] - x[i]) ** 2 + (y[kept] - y[i]) ** 2 < r2):
                continue
        keep.append(int(i))
    return np.asarray(keep, dtype=np.int64)


def detect(scores, xs, ys, stride, radius, k):
    """(K, 3) candidates (x, y, score), NaN-padded, from a (ny, nx) grid of window scores at centres xs, ys."""
    gx, gy = np.meshgrid(xs.astype(np.float64), ys.astype(np.float64))
    gx, gy, s = gx.ravel(), gy.ravel(), scores.astype(np.float64).ravel()
    keep = nms(gx, gy, s, radius, k)
    out = np.full((k, 3), np.nan, np.float32)
    for j, i in enumerate(keep):
        near = (np.abs(gx - gx[i]) <= stride) & (np.abs(gy - gy[i]) <= stride)
        w = s[near] + 1e-12
        out[j] = (np.sum(w * gx[near]) / np.sum(w), np.sum(w * gy[near]) / np.sum(w), s[i])
    return out


def predict(model, batch):
    window, stride = int(model["window"]), int(model["stride"])
    sess, chunk = model["session"], int(model.get("batch", 256))
    name = sess.get_inputs()[0].name
    tiles = np.asarray(batch, dtype=np.float32)
    h, w = tiles.shape[-2:]
    ys, xs = grid(h, window, stride), grid(w, window, stride)
    half = (window - 1) / 2
    out = []
    for tile in tiles:
        view = sliding_window_view(tile, (window, window), axis=(1, 2))  # (bands, H-w+1, W-w+1, w, w)
        win = view[:, ys[:, None], xs[None, :]]  # (bands, ny, nx, w, w)
        win = np.ascontiguousarray(np.moveaxis(win, 0, 2).reshape(-1, tile.shape[0], window, window))
        scores = np.concatenate([np.asarray(sess.run(None, {name: win[i:i + chunk]})[0]).reshape(-1)
                                 for i in range(0, len(win), chunk)])
        out.append(detect(scores.reshape(len(ys), len(xs)), xs + half, ys + half, stride,
                          float(model["nms_radius"]), int(model["max_candidates"])))
    return np.stack(out)
