"""CosmoGAN baseline: the DCGAN of Mustafa et al. 2019 (Comput. Astrophys. Cosmol. 6, 1; arXiv:1706.02390),
scaled down to the track's map size, in PyTorch, exported to ONNX.

    python baselines/generate/cosmogan/train.py --track wl-maps --release releases/wl-maps \
        --out baselines/generate/cosmogan/wl-maps [--max-train N] [--epochs E]

Generator (as the paper's, fewer channels): the latent vector -> a dense layer to ``widths[0]`` x (H/16) x (W/16)
-> four 5x5 transposed convolutions of stride 2, BatchNorm + ReLU between them. Discriminator: four 5x5
convolutions of stride 2 (``disc_widths``), BatchNorm (not on the first) + LeakyReLU(0.2), a linear logit.

Training: the non-saturating GAN loss, Adam (``lr``, ``beta1``; the paper: 2e-4, 0.5), optional one-sided label
smoothing (``real_label``), on the public training maps, each drawn with its own random flip, 90-degree rotation
and periodic shift (the maps are periodic). The paper maps pixels to [-1, 1] by s(x) = 2x / (x + a) - 1; for
convergence maps (which reach down to -kappa0) this baseline uses the standardised log(kappa + shift), with
``shift`` just below minus the training maps' minimum, inverted inside the exported model, so the model returns
convergence maps (N, 1, H, W) from latents (N, dim), never below -shift. GAN training does not converge to a
point, so every ``select_every`` epochs the generator's maps are scored against the public maps (train and val) by
the track's primary metric (chi^2 per dof of the summary vector, :mod:`skybench.tasks.generate.metrics`), and the
best epoch is exported; before scoring and export the generator's BatchNorm statistics are re-estimated over many
latent batches (the running averages of a moving generator lag behind it).

Conditional tracks (``params`` among the track's inputs, e.g. ``wl-maps-conditional``: (Omega_m, sigma8) per map)
train a conditional DCGAN: the standardised parameters are appended to the latent vector, and the discriminator
adds a projection term <embed(params), features> to its logit (Miyato & Koyama 2018, arXiv:1802.05637). The ONNX
model then takes (latents (N, dim), params (N, P)), in that order, and the parameters are standardised inside it.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from skybench.release.reader import open_release
from skybench.tasks.generate.config import GenerateScoring, GenerateTrack
from skybench.tasks.generate.metrics import SummaryBins, chi2_per_dof
from skybench.tasks.generate.score import bin_counts
from skybench.tracks import load_track
from skybench.training import CurveLogger, fresh_folder, run_cli, start, write_submission

NAME = "cosmogan"


# ------------------------------------------------------------------------------------------- pixel transform


class PixelTransform(NamedTuple):
    """u = (log(kappa + shift) - mu) / sd, and back: kappa = exp(u sd + mu) - shift."""

    shift: float
    mu: float
    sd: float

    @classmethod
    def fit(cls, maps: np.ndarray) -> PixelTransform:
        """``shift`` = -min(kappa) + 0.1 std(kappa) over the training pixels: kappa + shift > 0 with a margin."""
        x = np.asarray(maps, np.float64)
        shift = float(-x.min() + 0.1 * x.std())
        u = np.log(x + shift)
        return cls(shift, float(u.mean()), float(u.std()))

    def forward(self, maps: np.ndarray) -> np.ndarray:
        return ((np.log(np.asarray(maps, np.float64) + self.shift) - self.mu) / self.sd).astype(np.float32)


# ----------------------------------------------------------------------------------------------------- model


class Generator(nn.Module):
    def __init__(self, dim: int, n_pix: int, widths: list[int], n_cond: int = 0):
        super().__init__()
        self.w0, self.s0 = widths[0], n_pix // 2 ** (len(widths))
        self.dense = nn.Sequential(nn.Linear(dim + n_cond, widths[0] * self.s0 * self.s0),
                                   nn.BatchNorm1d(widths[0] * self.s0 * self.s0), nn.ReLU())
        layers: list[nn.Module] = []
        chans = [*widths, 1]
        for i in range(len(widths)):
            layers.append(nn.ConvTranspose2d(chans[i], chans[i + 1], 5, 2, padding=2, output_padding=1))
            if i < len(widths) - 1:
                layers += [nn.BatchNorm2d(chans[i + 1]), nn.ReLU()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        h = z if c is None else torch.cat([z, c], dim=1)
        return self.net(self.dense(h).view(-1, self.w0, self.s0, self.s0))


class Discriminator(nn.Module):
    def __init__(self, n_pix: int, widths: list[int], n_cond: int = 0):
        super().__init__()
        layers: list[nn.Module] = []
        chans = [1, *widths]
        for i in range(len(widths)):
            layers.append(nn.Conv2d(chans[i], chans[i + 1], 5, 2, padding=2))
            if i:
                layers.append(nn.BatchNorm2d(chans[i + 1]))
            layers.append(nn.LeakyReLU(0.2))
        side = n_pix // 2 ** len(widths)
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.logit = nn.Linear(widths[-1] * side * side, 1)
        self.embed = nn.Linear(n_cond, widths[-1] * side * side, bias=False) if n_cond else None

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(x)
        out = self.logit(h)
        if self.embed is not None and c is not None:  # projection discriminator
            out = out + (self.embed(c) * h).sum(dim=1, keepdim=True)
        return out


class Exported(nn.Module):
    """latents (N, dim) [, params (N, P)] -> convergence maps (N, 1, H, W): the generator, the parameters'
    standardisation and the inverse of the pixel transform."""

    def __init__(self, gen: Generator, transform: PixelTransform, cond_mu: np.ndarray | None = None,
                 cond_sd: np.ndarray | None = None):
        super().__init__()
        self.gen = gen
        self.shift, self.mu, self.sd = transform.shift, transform.mu, transform.sd
        self.conditional = cond_mu is not None
        self.register_buffer("cond_mu", torch.as_tensor(np.zeros(0) if cond_mu is None else cond_mu,
                                                        dtype=torch.float32))
        self.register_buffer("cond_sd", torch.as_tensor(np.ones(0) if cond_sd is None else cond_sd,
                                                        dtype=torch.float32))

    def forward(self, z: torch.Tensor, params: torch.Tensor | None = None) -> torch.Tensor:
        c = None if params is None else (params - self.cond_mu) / self.cond_sd
        u = torch.clamp(self.gen(z, c), -30.0, 30.0)  # 30 sd: finite maps even for wild latents
        return torch.exp(u * self.sd + self.mu) - self.shift


def export(model: Exported, path: Path, dim: int) -> Path:
    """ONNX with a dynamic batch axis: inputs ``latents`` (N, dim) [and ``params`` (N, P)], output ``maps``."""
    args: tuple[torch.Tensor, ...] = (torch.zeros(2, dim),)
    names = ["latents"]
    if model.conditional:
        args += (torch.zeros(2, len(model.cond_mu)) + model.cond_mu,)
        names.append("params")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.cpu().eval(), args, str(path), input_names=names, output_names=["maps"],
                          dynamic_axes={k: {0: "N"} for k in [*names, "maps"]}, dynamo=False)
    return path


# -------------------------------------------------------------------------------------------------- training


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Per map: a random flip, 90-degree rotation and periodic shift (the maps' statistics are invariant)."""
    n, side = x.shape[0], x.shape[-1]
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    k = torch.randint(0, 4, (n,), generator=gen)
    x = torch.stack([torch.rot90(m, int(r), (1, 2)) for m, r in zip(x, k, strict=True)])
    dy, dx = torch.randint(0, side, (2, n), generator=gen)
    rows = (torch.arange(side).view(1, -1) + dy.view(-1, 1)) % side  # (n, side)
    cols = (torch.arange(side).view(1, -1) + dx.view(-1, 1)) % side
    return x[torch.arange(n).view(-1, 1, 1), :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def latents(n: int, dim: int, normal: bool, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(n, dim, generator=gen) if normal else torch.rand(n, dim, generator=gen) * 2 - 1


def recalibrate(gen: Generator, dim: int, normal: bool, cond: torch.Tensor | None, batch: int, seed: int = 2,
                batches: int = 16) -> None:
    """Re-estimate the generator's BatchNorm statistics as plain averages over ``batches`` latent batches of
    ``batch`` maps (the training batch size; conditional: parameters drawn from ``cond``); leaves it in eval
    mode."""
    g = torch.Generator().manual_seed(seed)
    norms = [m for m in gen.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    gen.train()
    with torch.no_grad():
        for _ in range(batches):
            c = None if cond is None else cond[torch.randint(0, len(cond), (batch,), generator=g)]
            gen(latents(batch, dim, normal, g), c)
    for m, mom in zip(norms, saved, strict=True):
        m.momentum = mom
    gen.eval()


class Selector(NamedTuple):
    """Scores a generator by the chi^2 per dof of its maps' summary vectors (mean and spread) against reference maps:
    the track's primary metric without the hidden maps. Conditional: on the reference maps' own parameters."""

    ref_maps: np.ndarray  # (N, H, W)
    ref_cond: np.ndarray | None  # (N, P) standardised, or None
    bins: SummaryBins
    vectors: np.ndarray

    @classmethod
    def of(cls, maps: np.ndarray, size_deg: float, cond: np.ndarray | None = None) -> Selector | None:
        """None where the maps are too few for the summary vector's covariance (a tiny test set)."""
        try:
            n_ell, n_peaks, n_thr = bin_counts(GenerateScoring(), len(maps))  # the scorer's bins
        except ValueError:
            return None
        bins = SummaryBins.from_truth(maps, size_deg, n_ell=n_ell, n_peaks=n_peaks, n_thresholds=n_thr)
        return cls(maps, cond, bins, bins.vectors(maps))

    def score(self, gen: Generator, dim: int, normal: bool, transform: PixelTransform, batch: int,
              cond: torch.Tensor | None = None, seed: int = 1) -> float:
        """Recalibrates ``gen``'s BatchNorm (its training uses batch statistics: no harm), then scores it."""
        g = torch.Generator().manual_seed(seed)
        recalibrate(gen, dim, normal, cond, batch)
        with torch.no_grad():
            c = None if self.ref_cond is None else torch.from_numpy(self.ref_cond)
            u = gen(latents(len(self.ref_maps), dim, normal, g), c)[:, 0].double().numpy()
        gen.train()
        maps = np.exp(u * transform.sd + transform.mu) - transform.shift
        if not np.isfinite(maps).all():
            return math.inf
        return chi2_per_dof(self.bins.vectors(maps), self.vectors).per_dof


def fit(maps: np.ndarray, hp: Mapping[str, Any], dim: int, *, size_deg: float, normal: bool = True,
        cond: np.ndarray | None = None, select_maps: np.ndarray | None = None,
        select_cond: np.ndarray | None = None,
        on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> Exported:
    """Train the (conditional, when ``cond`` (N, P) is given) DCGAN on ``maps`` (N, [1,] H, W) and return the
    exportable generator. ``hp``: widths, disc_widths, lr, beta1, batch_size, epochs, seed, and optionally
    real_label (1: no smoothing), select_every (0: export the last epoch). ``select_maps`` (default ``maps``,
    with ``select_cond``): the public maps the best epoch is chosen against."""
    x = np.asarray(maps, np.float64)
    x = x[:, 0] if x.ndim == 4 else x
    n, n_pix = x.shape[0], x.shape[-1]
    transform = PixelTransform.fit(x)
    data = torch.from_numpy(transform.forward(x))[:, None]
    n_cond = 0 if cond is None else int(np.shape(cond)[1])
    c_mu = c_sd = None
    c_data = None
    if cond is not None:
        c = np.asarray(cond, np.float64)
        c_mu, c_sd = c.mean(axis=0), np.where(c.std(axis=0) > 0, c.std(axis=0), 1.0)
        c_data = torch.from_numpy(((c - c_mu) / c_sd).astype(np.float32))
    torch.manual_seed(int(hp["seed"]))
    gen = Generator(dim, n_pix, list(hp["widths"]), n_cond)
    disc = Discriminator(n_pix, list(hp["disc_widths"]), n_cond)
    betas = (float(hp["beta1"]), 0.999)
    opt_g = torch.optim.Adam(gen.parameters(), lr=float(hp["lr"]), betas=betas)
    opt_d = torch.optim.Adam(disc.parameters(), lr=float(hp["lr"]), betas=betas)
    bce = nn.BCEWithLogitsLoss()
    rng = torch.Generator().manual_seed(int(hp["seed"]))
    bs, epochs = int(hp["batch_size"]), int(hp["epochs"])
    real_label, every = float(hp.get("real_label", 1.0)), int(hp.get("select_every", 0))
    selector = None
    if every:
        sel = x if select_maps is None else np.asarray(select_maps, np.float64).reshape(-1, n_pix, n_pix)
        sel_c = None
        if cond is not None:
            raw = cond if select_maps is None else select_cond
            sel_c = ((np.asarray(raw, np.float64) - c_mu) / c_sd).astype(np.float32)
        selector = Selector.of(sel, size_deg, sel_c)
    best: tuple[float, dict[str, torch.Tensor] | None] = (math.inf, None)
    for epoch in range(1, epochs + 1):
        gen.train()
        disc.train()
        order = torch.randperm(n, generator=rng)
        sums, batches = np.zeros(2), 0
        for i in range(0, n - 1, bs):
            idx = order[i : i + bs]
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            real = augment(data[idx], rng)
            cb = None if c_data is None else c_data[idx]
            fake = gen(latents(len(idx), dim, normal, rng), cb)
            d_real, d_fake = disc(real, cb), disc(fake.detach(), cb)
            loss_d = bce(d_real, torch.full_like(d_real, real_label)) + bce(d_fake, torch.zeros_like(d_fake))
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            d_fake = disc(fake, cb)
            loss_g = bce(d_fake, torch.ones_like(d_fake))  # non-saturating generator loss
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            sums += [loss_g.item(), loss_d.item()]
            batches += 1
        g_loss, d_loss = sums / max(batches, 1)
        metrics = {"loss_generator": float(g_loss), "loss_discriminator": float(d_loss)}
        if selector is not None and (epoch % every == 0 or epoch == epochs):
            metrics["select_chi2_per_dof"] = score = selector.score(gen, dim, normal, transform, bs, c_data)
            if score < best[0]:
                best = (score, {k: v.detach().clone() for k, v in gen.state_dict().items()})
                metrics["select_best_epoch"] = float(epoch)
        if on_epoch is not None:
            on_epoch(epoch, metrics)
    if best[1] is not None:  # the best epoch's weights and (recalibrated) BatchNorm statistics
        gen.load_state_dict(best[1])
    else:
        recalibrate(gen, dim, normal, c_data, bs)
    return Exported(gen.eval(), transform, c_mu, c_sd).eval()


def train(argv: list[str] | None = None) -> tuple[Any, Path]:
    args, params = start(NAME, __doc__, argv)
    track = load_track(args.track)
    if not isinstance(track, GenerateTrack):
        raise SystemExit(f"{NAME}: track {args.track!r} is not a generate track")
    rel = open_release(args.release)
    maps = rel.array("train", "maps")
    n = len(maps) if args.max_train is None else min(args.max_train, len(maps))
    conditional = "params" in track.inputs
    cond = np.asarray(rel.array("train", "params")[:n], np.float64) if conditional else None
    x = np.asarray(maps[:n], np.float64)
    val = [s for s in ("val",) if rel.manifest["counts"].get(s)]
    select = np.concatenate([x, *(np.asarray(rel.array(s, "maps")[:], np.float64) for s in val)])
    select_cond = None
    if conditional:
        select_cond = np.concatenate([cond, *(np.asarray(rel.array(s, "params")[:], np.float64) for s in val)])
    dim = track.population.latent.dim
    t0 = time.perf_counter()
    with CurveLogger(NAME, args.track, params, enabled=not args.no_mlflow) as log:
        model = fit(x, params, dim, size_deg=track.population.size_deg,
                    normal=track.population.latent.distribution == "normal", cond=cond, select_maps=select,
                    select_cond=select_cond, on_epoch=lambda e, m: log.epoch(e, **m))
        out = fresh_folder(args.out)
        export(model, out / "model.onnx", dim)
    kind = "conditional DCGAN" if conditional else "DCGAN"
    write_submission(out, NAME, args.track, "onnx", "model.onnx",
                     f"CosmoGAN {kind} (Mustafa et al. 2019), generator {params['widths']}, "
                     f"discriminator {params['disc_widths']}, {params['epochs']} epochs on {n} training maps; ONNX")
    print(f"wrote {out} ({params['epochs']} epochs, {n} training maps, {time.perf_counter() - t0:.0f} s)")
    return model, out


if __name__ == "__main__":
    run_cli(train)
