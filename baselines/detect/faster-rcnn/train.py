"""Faster R-CNN baseline: a region-proposal network and a box head, written in plain PyTorch.

    python baselines/detect/faster-rcnn/train.py --track lens-tiles --release releases/lens-tiles \
        --out baselines/detect/faster-rcnn/lens-tiles [--set steps=100]

After Ren et al. 2015 ("Faster R-CNN", arXiv:1506.01497), one class (lens), trained from scratch on the public
``objects`` table (look-alikes, field galaxies and stars are background): every lens is a square box of side
2 (theta_E + ``box_margin``) arcsec around its centre.

- backbone: a small conv net (widths from params.yaml, stride 8); no pretrained weights (none can be downloaded
  here). The model takes e-/s and stretches them itself: asinh of the noise-normalised pixels, as centernet does.
- RPN: square anchors (``anchor_sides`` pixels, covering the track's 2 (theta_E + 1") = 28 to 60 pixels) at every
  cell; objectness and box deltas (Ren et al. eq. 2); anchors labelled by IoU (positive >= 0.7 or the best anchor
  of a lens, negative < 0.3), 256 sampled per window, at most half positive.
- proposals: the top ``pre_nms`` anchors by objectness, then **Fast NMS** (Bolya et al. 2019, YOLACT,
  arXiv:1904.02689: a box is dropped when any higher-scoring box overlaps it above the threshold, from the upper
  triangle of the IoU matrix), then the top ``post_nms``: every shape in the graph is static.
- box head: RoIAlign-like pooling (He et al. 2017; bilinear ``grid_sample``, 7x7 bins of 2x2 samples per RoI),
  two FC layers, a lens/background logit and a box refinement; 128 RoIs per window, 25% positive at IoU >= 0.5.
- output: the refined boxes, a final Fast NMS, the top K box centres (x, y in tile pixels, pixel (0, 0)'s centre
  at 0) with their scores, NaN-padded where Fast NMS left fewer than K: (N, K, 3) float32.

Why not torchvision's Faster R-CNN (what issue 18 names): the PyPI torchvision wheel that matches the installed
torch is built against CUDA torch and its compiled ops (``torchvision::nms``, ``roi_align``) do not load on the
CPU-only torch here, and download.pytorch.org (the CPU wheels) is not reachable. Torchvision's NMS is also a
data-dependent loop, which torch.export cannot capture with static shapes; Fast NMS can.

Exported as a ``torch.export`` program (``model.pt2``, format ``torch``) with a dynamic batch dimension; the runner
loads it with ``torch.export.load(p).module()``. Uses CUDA for training when available.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from skybench.release.reader import open_release
from skybench.tasks.detect.config import TABLE
from skybench.tasks.detect.metrics import score_tiles
from skybench.tracks import for_release, load_track
from skybench.training import CurveLogger, fresh_folder, noise_sigma, run_cli, start, write_submission
from skybench.training.serialise import save_torch_export

NAME = "faster-rcnn"
HEAD_WEIGHTS = (10.0, 10.0, 5.0, 5.0)  # box-head delta scaling of Fast R-CNN (std 0.1, 0.1, 0.2, 0.2)
MAX_DW = math.log(1000.0 / 16)  # the clamp of exp(dw) used by Detectron / torchvision


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of boxes (..., n, 4) and (..., m, 4) given as (x1, y1, x2, y2): (..., n, m)."""
    lt = torch.maximum(a[..., :, None, :2], b[..., None, :, :2])
    rb = torch.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / (area_a[..., :, None] + area_b[..., None, :] - inter).clamp(min=1e-6)


def encode(boxes: torch.Tensor, ref: torch.Tensor, weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
           ) -> torch.Tensor:
    """Deltas (tx, ty, tw, th) of ``boxes`` relative to ``ref`` (Ren et al. 2015, eq. 2), times ``weights``."""
    wr, hr = ref[..., 2] - ref[..., 0], ref[..., 3] - ref[..., 1]
    xr, yr = ref[..., 0] + 0.5 * wr, ref[..., 1] + 0.5 * hr
    w, h = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    x, y = boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h
    wx, wy, ww, wh = weights
    return torch.stack([wx * (x - xr) / wr, wy * (y - yr) / hr, ww * torch.log(w / wr), wh * torch.log(h / hr)], -1)


def decode(deltas: torch.Tensor, ref: torch.Tensor, weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
           ) -> torch.Tensor:
    """The inverse of :func:`encode`: boxes (x1, y1, x2, y2) from deltas relative to ``ref``."""
    wr, hr = ref[..., 2] - ref[..., 0], ref[..., 3] - ref[..., 1]
    xr, yr = ref[..., 0] + 0.5 * wr, ref[..., 1] + 0.5 * hr
    wx, wy, ww, wh = weights
    x, y = xr + deltas[..., 0] / wx * wr, yr + deltas[..., 1] / wy * hr
    w = wr * torch.exp((deltas[..., 2] / ww).clamp(max=MAX_DW))
    h = hr * torch.exp((deltas[..., 3] / wh).clamp(max=MAX_DW))
    return torch.stack([x - 0.5 * w, y - 0.5 * h, x + 0.5 * w, y + 0.5 * h], -1)


def clip_boxes(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Boxes clipped to the image, whose pixel edges run from -0.5 to size - 0.5."""
    x = boxes[..., 0::2].clamp(-0.5, width - 0.5)
    y = boxes[..., 1::2].clamp(-0.5, height - 0.5)
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], -1)


def fast_nms(boxes: torch.Tensor, threshold: float) -> torch.Tensor:
    """Fast NMS (Bolya et al. 2019, YOLACT sec. 3.3): keep mask (..., k) of boxes (..., k, 4) sorted by decreasing
    score; box j is dropped when any box i < j overlaps it with IoU > ``threshold`` (whether or not box i is kept
    itself, unlike greedy NMS). Static shapes: the column maximum of the upper-triangular IoU matrix."""
    iou = box_iou(boxes, boxes).triu(diagonal=1)
    return iou.amax(dim=-2) <= threshold


def make_anchors(height: int, width: int, stride: int, sides: torch.Tensor) -> torch.Tensor:
    """Square anchors (h * w * A, 4) of the given sides centred on every cell of a stride-``stride`` feature map
    (cell (r, c) at pixel (c s + (s - 1) / 2, r s + (s - 1) / 2)), ordered cell by cell (row-major), then side."""
    off = (stride - 1) / 2
    ys = torch.arange(height, dtype=sides.dtype, device=sides.device) * stride + off
    xs = torch.arange(width, dtype=sides.dtype, device=sides.device) * stride + off
    cy, cx = torch.meshgrid(ys, xs, indexing="ij")
    cx, cy, half = cx[..., None], cy[..., None], sides * 0.5  # (h, w, 1), (A,)
    return torch.stack([cx - half, cy - half, cx + half, cy + half], -1).reshape(-1, 4)


def roi_pool(feat: torch.Tensor, rois: torch.Tensor, stride: int, size: int = 7, sampling: int = 2) -> torch.Tensor:
    """RoIAlign-like pooling (He et al. 2017) with ``grid_sample``: features (N, C, h, w) of stride ``stride``,
    RoIs (N, R, 4) in image pixels -> (N * R, C, size, size), each bin the mean of ``sampling`` x ``sampling``
    bilinear samples at its sub-bin centres (feature cell j is at pixel j s + (s - 1) / 2)."""
    n, c, h, w = feat.shape
    r, g = rois.shape[1], size * sampling
    t = (torch.arange(g, dtype=feat.dtype, device=feat.device) + 0.5) / g
    x = rois[..., 0:1] + t * (rois[..., 2:3] - rois[..., 0:1])  # (N, R, g)
    y = rois[..., 1:2] + t * (rois[..., 3:4] - rois[..., 1:2])
    off = (stride - 1) / 2
    gx = ((x - off) / stride) * (2.0 / max(w - 1, 1)) - 1.0  # align_corners=True: -1 and 1 are the end cells
    gy = ((y - off) / stride) * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack([gx[:, :, None, :].expand(n, r, g, g), gy[:, :, :, None].expand(n, r, g, g)], -1)
    out = F.grid_sample(feat, grid.reshape(n, r * g, g, 2), mode="bilinear", padding_mode="border",
                        align_corners=True)  # (N, C, R g, g)
    out = out.reshape(n, c, r, g, g).permute(0, 2, 1, 3, 4).reshape(n * r, c, g, g)
    return F.avg_pool2d(out, sampling) if sampling > 1 else out


def block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True), nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class FasterRCNN(nn.Module):
    """(N, bands, H, W) e-/s -> (N, K, 3) candidates (x, y, score); :meth:`losses` for training."""

    stride = 8

    def __init__(self, bands: int, sigma: np.ndarray, params: dict[str, Any], k: int):
        super().__init__()
        self.p, self.k = dict(params), int(k)
        self.register_buffer("inv_sigma", torch.as_tensor(1.0 / (float(params["stretch_sigma"]) * sigma),
                                                          dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("sides", torch.tensor([float(s) for s in params["anchor_sides"]]))
        w = [int(c) for c in params["widths"]]  # three stride-2 blocks (stride 8), the rest at stride 8
        self.backbone = nn.Sequential(block(bands, w[0], 2), *(block(w[i - 1], w[i], 2 if i < 3 else 1)
                                                               for i in range(1, len(w))))
        c, a, fc, pool = w[-1], len(params["anchor_sides"]), int(params["fc"]), int(params["pool"])
        self.rpn_conv = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU(inplace=True))
        self.rpn_obj, self.rpn_box = nn.Conv2d(c, a, 1), nn.Conv2d(c, 4 * a, 1)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c * pool * pool, fc), nn.ReLU(inplace=True),
                                  nn.Linear(fc, fc), nn.ReLU(inplace=True))
        self.cls, self.box = nn.Linear(fc, 1), nn.Linear(fc, 4)
        for m in (self.rpn_obj, self.rpn_box, self.cls):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.constant_(m.bias, 0.0)
        nn.init.normal_(self.box.weight, std=0.001)
        nn.init.constant_(self.box.bias, 0.0)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        z = x * self.inv_sigma
        return self.backbone(torch.sign(z) * torch.log(z.abs() + torch.sqrt(z * z + 1)))  # asinh

    def rpn(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Objectness logits (N, M), deltas (N, M, 4) and anchors (M, 4), M = h w A, in :func:`make_anchors`'
        order."""
        n, _, h, w = feat.shape
        t = self.rpn_conv(feat)
        obj = self.rpn_obj(t).permute(0, 2, 3, 1).reshape(n, -1)
        deltas = self.rpn_box(t).reshape(n, -1, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, 4)
        return obj, deltas, make_anchors(h, w, self.stride, self.sides)

    def proposals(self, obj: torch.Tensor, deltas: torch.Tensor, anchors: torch.Tensor, shape: tuple[int, int],
                  pre: int, post: int) -> torch.Tensor:
        """(N, post, 4) boxes: the top ``pre`` anchors by objectness, decoded and clipped, Fast NMS, top ``post``
        (boxes Fast NMS dropped come last, only where fewer than ``post`` survive)."""
        pre = min(pre, obj.shape[1])
        score, idx = torch.topk(obj, pre, dim=1)
        boxes = decode(torch.gather(deltas, 1, idx[..., None].expand(-1, -1, 4)), anchors[idx])
        boxes = clip_boxes(boxes, *shape)
        score = torch.where(fast_nms(boxes, float(self.p["rpn_nms"])), score, score - 1e4)
        _, top = torch.topk(score, min(post, pre), dim=1)
        return torch.gather(boxes, 1, top[..., None].expand(-1, -1, 4))

    def box_head(self, feat: torch.Tensor, rois: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (N, R) and deltas (N, R, 4) of the RoIs (N, R, 4)."""
        n, r = rois.shape[:2]
        h = self.head(roi_pool(feat, rois, self.stride, int(self.p["pool"])))
        return self.cls(h).reshape(n, r), self.box(h).reshape(n, r, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2], x.shape[-1]
        feat = self.features(x)
        obj, deltas, anchors = self.rpn(feat)
        rois = self.proposals(obj, deltas, anchors, (height, width), int(self.p["pre_nms"]),
                              int(self.p["post_nms"]))
        logit, d = self.box_head(feat, rois)
        boxes = clip_boxes(decode(d, rois, HEAD_WEIGHTS), height, width)
        score, order = torch.topk(torch.sigmoid(logit), rois.shape[1], dim=1)  # sorted
        boxes = torch.gather(boxes, 1, order[..., None].expand(-1, -1, 4))
        score = torch.where(fast_nms(boxes, float(self.p["final_nms"])), score, torch.full_like(score, -1.0))
        top, idx = torch.topk(score, self.k, dim=1)
        boxes = torch.gather(boxes, 1, idx[..., None].expand(-1, -1, 4))
        cx = ((boxes[..., 0] + boxes[..., 2]) * 0.5).clamp(0.0, width - 1.0)
        cy = ((boxes[..., 1] + boxes[..., 3]) * 0.5).clamp(0.0, height - 1.0)
        out = torch.stack([cx, cy, top], -1)
        return torch.where(top[..., None] >= 0, out, torch.full_like(out, float("nan")))

    def losses(self, x: torch.Tensor, gt: list[torch.Tensor], gen: torch.Generator) -> dict[str, torch.Tensor]:
        """The four Faster R-CNN losses of a batch; ``gt`` per image (G, 4) lens boxes in its pixels."""
        height, width = x.shape[-2], x.shape[-1]
        feat = self.features(x)
        obj, deltas, anchors = self.rpn(feat)
        p = self.p
        with torch.no_grad():
            rois = self.proposals(obj.detach(), deltas.detach(), anchors, (height, width), int(p["pre_nms_train"]),
                                  int(p["post_nms_train"]))
        zero = feat.sum() * 0.0
        out = {"rpn_cls": zero, "rpn_box": zero, "roi_cls": zero, "roi_box": zero}
        for i, g in enumerate(gt):
            # RPN: anchors labelled by IoU, 256 sampled, at most half positive
            labels, matched = assign(anchors, g, float(p["rpn_pos_iou"]), float(p["rpn_neg_iou"]), best=True)
            pos, neg = sample(labels, int(p["rpn_batch"]), float(p["rpn_pos_fraction"]), gen)
            sel = torch.cat([pos, neg])
            target = torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))]).to(obj)
            out["rpn_cls"] = out["rpn_cls"] + F.binary_cross_entropy_with_logits(obj[i, sel], target)
            if len(pos):
                t = encode(g[matched[pos]], anchors[pos])
                out["rpn_box"] = out["rpn_box"] + F.smooth_l1_loss(deltas[i, pos], t, beta=1 / 9,
                                                                   reduction="sum") / len(sel)
            # box head: the proposals and the true boxes, 128 sampled, 25% positive at IoU >= 0.5
            cand = torch.cat([rois[i], g]) if len(g) else rois[i]
            labels, matched = assign(cand, g, float(p["roi_pos_iou"]), float(p["roi_pos_iou"]), best=False)
            pos, neg = sample(labels, int(p["roi_batch"]), float(p["roi_pos_fraction"]), gen)
            sel = torch.cat([pos, neg])
            logit, d = self.box_head(feat[i:i + 1], cand[sel][None])
            target = torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))]).to(logit)
            out["roi_cls"] = out["roi_cls"] + F.binary_cross_entropy_with_logits(logit[0], target)
            if len(pos):
                t = encode(g[matched[pos]], cand[pos], HEAD_WEIGHTS)
                out["roi_box"] = out["roi_box"] + F.smooth_l1_loss(d[0, :len(pos)], t, beta=1 / 9,
                                                                   reduction="sum") / len(sel)
        return {key: v / len(gt) for key, v in out.items()}


def assign(boxes: torch.Tensor, gt: torch.Tensor, pos_iou: float, neg_iou: float, *, best: bool
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels (M,) of ``boxes`` against the true boxes ``gt`` (1 positive: IoU >= ``pos_iou``; 0 negative: IoU <
    ``neg_iou``; -1 ignored) and the index of each one's best true box. ``best``: the boxes of highest IoU with a
    true box are positive too (Ren et al.: so that every lens has an anchor)."""
    labels = torch.zeros(len(boxes), dtype=torch.long, device=boxes.device)
    if not len(gt):
        return labels, labels.clone()
    iou = box_iou(boxes, gt)
    top, matched = iou.max(dim=1)
    labels[top >= neg_iou] = -1
    labels[top >= pos_iou] = 1
    if best:
        highest = iou.max(dim=0).values
        labels[((iou == highest[None]) & (highest[None] > 0)).any(dim=1)] = 1
    return labels, matched


def sample(labels: torch.Tensor, n: int, fraction: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of up to ``n * fraction`` random positives and negatives to make ``n`` in all (fewer when short)."""
    pos, neg = torch.nonzero(labels == 1).flatten(), torch.nonzero(labels == 0).flatten()
    pos = pos[torch.randperm(len(pos), generator=gen)[:int(n * fraction)].to(pos.device)]
    neg = neg[torch.randperm(len(neg), generator=gen)[:n - len(pos)].to(neg.device)]
    return pos, neg


def lens_boxes(table: Any, ids: np.ndarray, pixel_scale: float, margin: float) -> list[np.ndarray]:
    """Per tile (n, 3) lens (x, y, side): side = 2 (theta_E + ``margin``) arcsec in pixels."""
    lens = table[table["kind"] == "lens"]
    out = []
    for t in ids:
        sel = lens[lens["tile"] == t]
        side = 2 * (sel["theta_E"].to_numpy(np.float64) + margin) / pixel_scale
        out.append(np.column_stack([sel["x"].to_numpy(np.float64), sel["y"].to_numpy(np.float64), side]))
    return out


def crops(x: np.ndarray, lenses: list[np.ndarray], size: int, n: int, rng: np.random.Generator
          ) -> tuple[np.ndarray, list[np.ndarray]]:
    """``n`` windows of ``size`` pixels, the first half around a random lens (its centre at least 8 pixels from
    the window's edge), the rest anywhere; with the (G, 4) boxes of the lenses centred inside each window."""
    tiles, big = x.shape[0], x.shape[-1]
    with_lens = [t for t in range(tiles) if len(lenses[t])]
    out, boxes = np.empty((n, x.shape[1], size, size), np.float32), []
    for i in range(n):
        if i < n // 2 and with_lens:
            t = int(rng.choice(with_lens))
            lx, ly, _ = lenses[t][rng.integers(len(lenses[t]))]
            c0 = int(np.clip(lx - rng.uniform(8, size - 8), 0, big - size))
            r0 = int(np.clip(ly - rng.uniform(8, size - 8), 0, big - size))
        else:
            t, c0, r0 = int(rng.integers(tiles)), int(rng.integers(big - size + 1)), int(rng.integers(big - size + 1))
        out[i] = x[t, :, r0:r0 + size, c0:c0 + size]
        cx, cy, side = lenses[t].T
        cx, cy = cx - c0, cy - r0
        inside = (cx >= 0) & (cx < size) & (cy >= 0) & (cy < size)
        half = side[inside] / 2
        boxes.append(np.column_stack([cx[inside] - half, cy[inside] - half, cx[inside] + half, cy[inside] + half]))
    return out, boxes


def dihedral(x: np.ndarray, boxes: list[np.ndarray], rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
    """The same random flip and 90-degree rotation of each square window and of its boxes."""
    size = x.shape[-1]
    out, moved = np.empty_like(x), []
    for i in range(len(x)):
        img, b = x[i], boxes[i].copy()
        if rng.random() < 0.5:  # flip left-right: x -> size - 1 - x
            img, b = img[..., ::-1], np.column_stack([size - 1 - b[:, 2], b[:, 1], size - 1 - b[:, 0], b[:, 3]])
        for _ in range(int(rng.integers(4))):  # rot90 (counter-clockwise): (x, y) -> (y, size - 1 - x)
            img = np.rot90(img, axes=(-2, -1))
            b = np.column_stack([b[:, 1], size - 1 - b[:, 2], b[:, 3], size - 1 - b[:, 0]])
        out[i] = img
        moved.append(b.reshape(-1, 4))
    return out, moved


@torch.no_grad()
def detect(model: FasterRCNN, x: np.ndarray, device: str = "cpu", batch: int = 8) -> np.ndarray:
    model.eval()
    return np.concatenate([model(torch.from_numpy(x[i:i + batch]).to(device)).cpu().numpy()
                           for i in range(0, len(x), batch)])


def export(model: FasterRCNN, path: Path, shape: tuple[int, ...]) -> Path:
    """``model`` as a torch.export program with a dynamic batch dimension (.pt2)."""
    model = model.cpu().eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(model, (torch.zeros(2, *shape),), dynamic_shapes=({0: batch},))
    return save_torch_export(program, path, Path(__file__).resolve().parents[3])  # the checkout holding this file


def train(argv: list[str] | None = None) -> tuple[FasterRCNN, Path]:
    args, params = start(NAME, __doc__, argv)
    track = for_release(load_track(args.track), args.release)  # the release profile's tile size
    rel = open_release(args.release)
    x = np.ascontiguousarray(rel.array("train", "images")[:args.max_train], dtype=np.float32)
    ids = rel.meta("train")["id"].to_numpy()[:len(x)]
    pix = float(track.survey.pixel_scale)
    lenses = lens_boxes(rel.table("train", TABLE), ids, pix, float(params["box_margin"]))
    xv = np.ascontiguousarray(rel.array("val", "images"), dtype=np.float32)
    ids_v, table_v = rel.meta("val")["id"].to_numpy(), rel.table("val", TABLE)
    sigma = noise_sigma(x)
    k = int(track.output.max_candidates)
    if int(params["post_nms"]) < k:
        raise SystemExit(f"{NAME}: post_nms = {params['post_nms']} proposals cannot give the track's K = {k} "
                         f"candidates; raise post_nms")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = FasterRCNN(x.shape[1], sigma, params, k).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=float(params["lr"]), weight_decay=1e-4)
    steps, bs, size = int(params["steps"]), int(params["batch_size"]), int(params["crop"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, float(params["lr"]), total_steps=steps, pct_start=0.1)
    rng, gen = np.random.default_rng(int(params["seed"])), torch.Generator().manual_seed(int(params["seed"]))
    out = fresh_folder(args.out)
    every = max(steps // 10, 1)
    t0 = time.perf_counter()
    with CurveLogger(NAME, args.track, {**params, "sigma": sigma.tolist(), "device": device},
                     enabled=not args.no_mlflow) as log:
        totals: dict[str, float] = {}
        for step in range(1, steps + 1):
            model.train()
            xb, boxes = dihedral(*crops(x, lenses, size, bs, rng), rng)
            losses = model.losses(torch.from_numpy(xb).to(device),
                                  [torch.as_tensor(b, dtype=torch.float32, device=device) for b in boxes], gen)
            loss = sum(losses.values(), torch.zeros((), device=device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            sched.step()
            for key, v in {"loss": loss, **losses}.items():
                totals[key] = totals.get(key, 0.0) + float(v.item()) / every
            if step % every == 0 or step == steps:
                log.epoch(step, **totals, lr=sched.get_last_lr()[0])
                totals = {}
        val = score_tiles(track, ids_v, detect(model, xv, device), table_v, n_resamples=50)
        log.summary(val_average_precision=val["average_precision"], val_completeness=val["completeness"],
                    train_seconds=time.perf_counter() - t0)
    export(model, out / "model.pt2", x.shape[1:])
    write_submission(out, NAME, args.track, "torch", "model.pt2",
                     f"Faster R-CNN (Ren et al. 2015) in plain PyTorch, from scratch: conv backbone (widths "
                     f"{params['widths']}, stride 8), RPN with square anchors {params['anchor_sides']} px, Fast NMS, "
                     f"RoIAlign-like 7x7 pooling, FC box head; top {k} box centres; {steps} steps; torch.export")
    print(f"wrote {out} (val AP {val['average_precision']:.3f}, completeness {val['completeness']:.3f})")
    return model.eval(), out


if __name__ == "__main__":
    run_cli(train)
