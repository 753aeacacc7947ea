"""ResNet baseline: a pre-activation bottleneck ResNet in the style of CMU DeepLens, exported to ONNX.

    python baselines/lens/resnet/train.py --track lens-space --release releases/lens-space \
        --out baselines/lens/resnet/lens-space [--max-train N] [--epochs E] [--set widths=[16,32]]
        [--also releases/lens-space-realsrc[:WEIGHT] --name NAME]   # a mixture (training/mixture.py)

After Lanusse et al. 2018 (arXiv:1703.02642): a 7x7 convolution with 32 filters, stages of pre-activation
bottleneck units (BN-ELU-conv 1x1, BN-ELU-conv 3x3, BN-ELU-conv 1x1 + shortcut; He et al. 2016) that halve
the resolution at the start of every stage after the first, global average pooling and a sigmoid. Scaled
down for a CPU demo (depth, widths, crop and stem stride come from ``train.resnet`` in params.yaml).

Preprocessing is part of the exported model: central crop, division by the per-band noise sigma (1.4826 MAD
of the training set's border pixels, a buffer of the model), clipping at ``clip_sigma`` (DeepLens clips at
250 sigma) and, with ``stretch: asinh``, an arcsinh stretch. Training: random flips and 90-degree rotations,
Adam with a step learning-rate schedule (StepLR), binary cross-entropy. Deterministic on the CPU for a given
seed; uses CUDA when available, with the training set on the card. ``time_limit_s`` ends training early.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.special import expit
from torch import nn

from skybench.training import (
    CurveLogger,
    KeepBest,
    binary_metrics,
    dihedral_torch,
    export_onnx,
    fresh_folder,
    load_training,
    mixture_note,
    noise_sigma,
    predict_batches,
    run_cli,
    start,
    write_submission,
)

NAME = "resnet"


class Preprocess(nn.Module):
    """Central crop, per-band noise normalisation, clipping at +-clip sigma (then arcsinh if asked)."""

    def __init__(self, sigma: np.ndarray, size: int, crop: int, clip: float, stretch: str = "linear"):
        super().__init__()
        if stretch not in ("linear", "asinh"):
            raise ValueError(f"stretch must be linear or asinh, got {stretch!r}")
        self.asinh = stretch == "asinh"
        self.register_buffer("inv_sigma", torch.as_tensor(1.0 / sigma, dtype=torch.float32).view(1, -1, 1, 1))
        self.start = (size - crop) // 2 if crop and crop < size else 0
        self.stop = self.start + crop if crop and crop < size else size
        self.clip = float(clip)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, self.start:self.stop, self.start:self.stop] * self.inv_sigma
        x = torch.clamp(x, -self.clip, self.clip)
        return torch.asinh(x) if self.asinh else x


class Bottleneck(nn.Module):
    """Pre-activation bottleneck unit: (BN-ELU-conv1x1, BN-ELU-conv3x3, BN-ELU-conv1x1) + shortcut."""

    def __init__(self, cin: int, cout: int, stride: int, ratio: int):
        super().__init__()
        mid = max(cout // ratio, 4)
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, mid, 1, stride=stride, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(mid), nn.Conv2d(mid, mid, 3, padding=1, bias=False)
        self.bn3, self.conv3 = nn.BatchNorm2d(mid), nn.Conv2d(mid, cout, 1, bias=False)
        self.act = nn.ELU()
        self.project = (nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
                        if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act(self.bn1(x))
        shortcut = self.project(pre) if self.project is not None else x
        h = self.conv1(pre)
        h = self.conv2(self.act(self.bn2(h)))
        h = self.conv3(self.act(self.bn3(h)))
        return h + shortcut


class DeepLensResNet(nn.Module):
    """Returns logits (N,); ``Scorer`` wraps it with the sigmoid for export."""

    def __init__(self, bands: int, sigma: np.ndarray, *, size: int, crop: int, clip: float, stretch: str,
                 stem: int, stem_stride: int, widths: list[int], units: list[int], ratio: int):
        super().__init__()
        self.pre = Preprocess(sigma, size, crop, clip, stretch)
        self.stem = nn.Conv2d(bands, stem, 7, stride=stem_stride, padding=3, bias=False)
        layers: list[nn.Module] = []
        cin = stem
        for s, (width, n) in enumerate(zip(widths, units, strict=True)):
            for u in range(n):
                layers.append(Bottleneck(cin, width, 2 if (s > 0 and u == 0) else 1, ratio))
                cin = width
        self.stages = nn.Sequential(*layers)
        self.post = nn.Sequential(nn.BatchNorm2d(cin), nn.ELU())
        self.head = nn.Linear(cin, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.post(self.stages(self.stem(self.pre(x))))
        return self.head(h.mean(dim=(2, 3))).squeeze(1)


class Scorer(nn.Module):
    """The exported model: (N, bands, H, W) e-/s -> (N,) lens probability."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(x))


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and rotation by k*90 degrees, per cut-out (the 8 symmetries of the square)."""
    return dihedral_torch([x], gen)[0]


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray, device: str, batch: int = 256) -> np.ndarray:
    model.eval()
    return predict_batches(lambda b: model(torch.from_numpy(b).to(device)).float().cpu().numpy(), [x], batch)


def build(params: dict, bands: int, sigma: np.ndarray, size: int) -> DeepLensResNet:
    return DeepLensResNet(bands, sigma, size=size, crop=int(params["crop"]), clip=float(params["clip_sigma"]),
                          stretch=str(params["stretch"]),
                          stem=int(params["stem"]), stem_stride=int(params["stem_stride"]),
                          widths=[int(w) for w in params["widths"]], units=[int(u) for u in params["units"]],
                          ratio=int(params["bottleneck_ratio"]))


def train(argv: list[str] | None = None) -> tuple[Any, Path]:
    """Train from the command line ``argv``; return (the trained in-framework model, the submission folder)."""
    args, params = start(NAME, __doc__, argv, mixture=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cudnn.benchmark = device == "cuda"  # two batch shapes: autotune the convolutions once each
    x, y = load_training(args, params, "train")
    xv, yv = load_training(args, params, "val")
    sigma = noise_sigma(x)
    model = build(params, x.shape[1], sigma, x.shape[-1]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=float(params["lr"]), weight_decay=float(params["weight_decay"]))
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=int(params["lr_step"]), gamma=float(params["lr_gamma"]))
    loss_fn = nn.BCEWithLogitsLoss()
    gen = torch.Generator().manual_seed(int(params["seed"]))
    bs = int(params["batch_size"])
    # on a GPU the training set lives on the card (16 GB at most for the challenge profile) and nothing syncs per step
    xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).float().to(device)
    limit = params.get("time_limit_s")
    t0 = time.monotonic()
    out = fresh_folder(args.out)
    keep = KeepBest("auroc", nan_is_best=True, enabled=bool(params["keep_best"]))
    with CurveLogger(args.name, args.track, {**params, "sigma": sigma.tolist(), "device": device},
                     enabled=not args.no_mlflow) as log:
        for epoch in range(1, int(params["epochs"]) + 1):
            model.train()
            order = torch.randperm(len(xt), generator=gen)
            total, seen = torch.zeros((), dtype=torch.float64, device=device), 0
            for i in range(0, len(order), bs):
                idx = order[i:i + bs]
                if len(idx) < 2:  # BatchNorm needs two samples
                    continue
                on = idx.to(device)
                loss = loss_fn(model(augment(xt[on], gen)), yt[on])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total, seen = total + loss.detach().double() * len(idx), seen + len(idx)
            sched.step()
            val = binary_metrics(yv, expit(predict(model, xv, device)))
            log.epoch(epoch, loss=float(total) / max(seen, 1), val_loss=val["loss"], val_auroc=val["auroc"],
                      lr=sched.get_last_lr()[0])
            keep.update(epoch, val, lambda: copy.deepcopy(model.state_dict()))
            if limit is not None and time.monotonic() - t0 > float(limit):
                print(f"stopped after epoch {epoch}: time_limit_s {limit} passed")
                break
        if keep.enabled:
            model.load_state_dict(keep.state)
            val = keep.metrics
            print(f"kept epoch {keep.epoch} (best val AUROC)")
        export_onnx(Scorer(model), out / "model.onnx", x.shape[1:], "score")
        log.summary(val_auroc=val["auroc"], val_loss=val["loss"], best_epoch=keep.epoch)
    write_submission(out, args.name, args.track, "onnx", "model.onnx",
                     f"DeepLens-style pre-activation bottleneck ResNet (widths {params['widths']}, units "
                     f"{params['units']}), noise-normalised and clipped at {params['clip_sigma']} sigma; ONNX"
                     + mixture_note(args))
    print(f"wrote {out} (val AUROC {val['auroc']:.4f})")
    return Scorer(model).cpu().eval(), out


if __name__ == "__main__":
    run_cli(train)
