"""CenterNet baseline: a small U-Net that predicts a lens-centre heatmap; its peaks are the candidates.

    python baselines/detect/centernet/train.py --track lens-tiles --release releases/lens-tiles \
        --out baselines/detect/centernet/lens-tiles [--set steps=100]

After Zhou et al. 2019 ("Objects as Points", arXiv:1904.07850): the heatmap (stride ``stride`` = 4 pixels, one
class) is trained against Gaussian blobs at the lens centres of the public ``objects`` table (look-alikes, field
galaxies and stars are background) with CenterNet's penalty-reduced focal loss (alpha 2, beta 4, normalised by
the number of lenses). Training windows of ``crop`` pixels, half of them around a lens (the lenses are rare),
random flips and 90-degree rotations, Adam for a fixed number of ``steps``. Trained from scratch (no pretrained
weights); uses CUDA when available.

The exported ONNX model takes whole tiles (N, bands, H, W) in e-/s (dynamic batch axis) and does everything in the
graph: noise normalisation (per-band sigma, 1.4826 MAD of the training tiles), an arcsinh stretch, the network,
CenterNet's peak extraction (a 3x3 max-pool keeps the local maxima) and the top K, returned as (N, K, 3)
candidates (x, y, score) in pixels (a cell's centre), score = the heatmap's sigmoid. K candidates always exist
(K = 100 <= the heatmap's cells), so there is no NaN padding.
"""

from __future__ import annotations

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
from skybench.training import (
    CurveLogger,
    dihedral_torch,
    export_onnx,
    fresh_folder,
    noise_sigma,
    run_cli,
    start,
    write_submission,
)

NAME = "centernet"


def block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True), nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class HeatmapUNet(nn.Module):
    """(N, bands, H, W) e-/s -> heatmap logits (N, 1, H / 4, W / 4): an encoder of stride-2 blocks (stride 32 at
    the bottom: a 3" Einstein ring fits in its receptive field) and a decoder back to stride 4 with skips."""

    stride = 4

    def __init__(self, bands: int, sigma: np.ndarray, widths: list[int], stretch: float):
        super().__init__()
        self.register_buffer("inv_sigma", torch.as_tensor(1.0 / (stretch * sigma), dtype=torch.float32)
                             .view(1, -1, 1, 1))
        w = widths  # channels at strides 2, 4, 8, 16, 32
        self.down = nn.ModuleList([block(bands, w[0], 2), *(block(w[i - 1], w[i], 2) for i in range(1, len(w)))])
        self.up = nn.ModuleList([block(w[i] + w[i - 1], w[i - 1]) for i in range(len(w) - 1, 1, -1)])
        self.head = nn.Sequential(nn.Conv2d(w[1], w[1], 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(w[1], 1, 1))
        nn.init.constant_(self.head[-1].bias, -2.19)  # CenterNet: sigmoid(-2.19) = 0.1 at the start

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x * self.inv_sigma
        h = torch.sign(z) * torch.log(z.abs() + torch.sqrt(z * z + 1))  # asinh (no ONNX export of aten::asinh)
        skips = []
        for down in self.down:
            h = down(h)
            skips.append(h)
        for up, skip in zip(self.up, reversed(skips[1:-1]), strict=True):
            h = up(torch.cat([F.interpolate(h, size=skip.shape[-2:], mode="nearest"), skip], dim=1))
        return self.head(h)


class Detector(nn.Module):
    """The exported model: tiles -> (N, K, 3) candidates (x, y, score), the K highest local maxima (3x3)."""

    def __init__(self, net: HeatmapUNet, k: int):
        super().__init__()
        self.net, self.k = net, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        heat = torch.sigmoid(self.net(x))
        peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat).to(heat.dtype)
        n, _, h, w = peaks.shape
        score, idx = torch.topk(peaks.reshape(n, h * w), self.k, dim=1)
        s = float(self.net.stride)
        xs = (idx % w).to(heat.dtype) * s + (s - 1) / 2  # the centre of the cell in tile pixels
        ys = torch.div(idx, w, rounding_mode="floor").to(heat.dtype) * s + (s - 1) / 2
        return torch.stack([xs, ys, score], dim=-1)


def heatmaps(shape: tuple[int, int], centres: list[np.ndarray], stride: int, sigma: float) -> np.ndarray:
    """CenterNet targets (B, 1, h, w): per lens exp(-d^2 / 2 sigma^2) around its cell (exactly 1 there), max over
    lenses; ``centres`` per image (n, 2) pixel (x, y)."""
    h, w = shape[0] // stride, shape[1] // stride
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.zeros((len(centres), 1, h, w), np.float32)
    for b, xy in enumerate(centres):
        for x, y in xy:
            cx, cy = int(np.floor(x / stride)), int(np.floor(y / stride))
            if 0 <= cx < w and 0 <= cy < h:
                g = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))
                out[b, 0] = np.maximum(out[b, 0], g)
    return out


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0, beta: float = 4.0) -> torch.Tensor:
    """CenterNet's penalty-reduced pixel-wise focal loss (Zhou et al. 2019, eq. 1), normalised by the peaks."""
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1).float()
    pos_loss = -torch.log(p) * (1 - p) ** alpha * pos
    neg_loss = -torch.log(1 - p) * p**alpha * (1 - target) ** beta * (1 - pos)
    return (pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp(min=1.0)


def crops(x: np.ndarray, lenses: list[np.ndarray], size: int, n: int, rng: np.random.Generator
          ) -> tuple[np.ndarray, list[np.ndarray]]:
    """``n`` windows of ``size`` pixels, the first half around a random lens (anywhere in the window but 8
    pixels from its edge), the rest anywhere; with the lens centres (x, y) inside each window."""
    tiles, big = x.shape[0], x.shape[-1]
    with_lens = [t for t in range(tiles) if len(lenses[t])]
    out, centres = np.empty((n, x.shape[1], size, size), np.float32), []
    for i in range(n):
        if i < n // 2 and with_lens:
            t = int(rng.choice(with_lens))
            lx, ly = lenses[t][rng.integers(len(lenses[t]))]
            c0 = int(np.clip(lx - rng.uniform(8, size - 8), 0, big - size))
            r0 = int(np.clip(ly - rng.uniform(8, size - 8), 0, big - size))
        else:
            t, c0, r0 = int(rng.integers(tiles)), int(rng.integers(big - size + 1)), int(rng.integers(big - size + 1))
        out[i] = x[t, :, r0:r0 + size, c0:c0 + size]
        xy = lenses[t] - (c0, r0)
        centres.append(xy[(xy[:, 0] >= 0) & (xy[:, 0] < size) & (xy[:, 1] >= 0) & (xy[:, 1] < size)])
    return out, centres


def lens_centres(table: Any, ids: np.ndarray) -> list[np.ndarray]:
    lens = table[table["kind"] == "lens"]
    return [lens.loc[lens["tile"] == t, ["x", "y"]].to_numpy(np.float64) for t in ids]


@torch.no_grad()
def detect(model: Detector, x: np.ndarray, device: str = "cpu", batch: int = 8) -> np.ndarray:
    model.eval()
    return np.concatenate([model(torch.from_numpy(x[i:i + batch]).to(device)).cpu().numpy()
                           for i in range(0, len(x), batch)])


def dihedral_with_centres(xb: torch.Tensor, target: torch.Tensor, gen: torch.Generator
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random flip and rotation of each window and of its target heatmap."""
    return tuple(dihedral_torch([xb, target], gen))  # type: ignore[return-value]


def train(argv: list[str] | None = None) -> tuple[Any, Path]:
    args, params = start(NAME, __doc__, argv)
    track = for_release(load_track(args.track), args.release)  # the release profile's tile size
    rel = open_release(args.release)
    x = np.ascontiguousarray(rel.array("train", "images")[:args.max_train], dtype=np.float32)
    ids = rel.meta("train")["id"].to_numpy()[:len(x)]
    lenses = lens_centres(rel.table("train", TABLE), ids)
    xv = np.ascontiguousarray(rel.array("val", "images"), dtype=np.float32)
    ids_v, table_v = rel.meta("val")["id"].to_numpy(), rel.table("val", TABLE)
    sigma = noise_sigma(x)
    k = int(track.output.max_candidates)
    cells = (x.shape[-2] // HeatmapUNet.stride) * (x.shape[-1] // HeatmapUNet.stride)
    if cells < k:
        raise SystemExit(f"{NAME}: {x.shape[-1]}-pixel tiles give {cells} heatmap cells, fewer than the track's "
                         f"K = {k} candidates; use larger tiles or a smaller output.max_candidates")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    net = HeatmapUNet(x.shape[1], sigma, [int(c) for c in params["widths"]], float(params["stretch_sigma"]))
    net = net.to(device)
    opt = torch.optim.Adam(net.parameters(), lr=float(params["lr"]))
    steps, bs, size = int(params["steps"]), int(params["batch_size"]), int(params["crop"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    rng, gen = np.random.default_rng(int(params["seed"])), torch.Generator().manual_seed(int(params["seed"]))
    out = fresh_folder(args.out)
    model = Detector(net, k)
    every = max(steps // 10, 1)
    t0 = time.perf_counter()
    with CurveLogger(NAME, args.track, {**params, "sigma": sigma.tolist(), "device": device},
                     enabled=not args.no_mlflow) as log:
        total = 0.0
        for step in range(1, steps + 1):
            net.train()
            xb, centres = crops(x, lenses, size, bs, rng)
            target = heatmaps((size, size), centres, net.stride, float(params["heat_sigma"]))
            xb_t, tb = dihedral_with_centres(torch.from_numpy(xb), torch.from_numpy(target), gen)
            loss = focal_loss(net(xb_t.to(device)), tb.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
            if step % every == 0 or step == steps:
                log.epoch(step, loss=total / every, lr=sched.get_last_lr()[0])
                print(f"step {step}/{steps} loss {total / every:.3f} ({time.perf_counter() - t0:.0f} s)")
                total = 0.0
        val = score_tiles(track, ids_v, detect(model, xv, device), table_v, n_resamples=50)
        log.summary(val_average_precision=val["average_precision"], val_completeness=val["completeness"],
                    train_seconds=time.perf_counter() - t0)
    export_onnx(model.cpu().eval(), out / "model.onnx", x.shape[1:], "candidates")
    write_submission(out, NAME, args.track, "onnx", "model.onnx",
                     f"CenterNet-style U-Net heatmap (widths {params['widths']}, stride 4), focal loss, 3x3 max-pool "
                     f"peaks, top {model.k}; trained from scratch for {steps} steps; ONNX")
    print(f"wrote {out} (val AP {val['average_precision']:.3f}, completeness {val['completeness']:.3f})")
    return model.eval(), out


if __name__ == "__main__":
    run_cli(train)
