"""CosmoGAN baseline: the DCGAN of Mustafa et al. 2019 (Comput. Astrophys. Cosmol. 6, 1; arXiv:1706.02390),
scaled down to the track's map size, in PyTorch, exported to ONNX.

    python baselines/generate/cosmogan/train.py --track wl-maps --release releases/wl-maps \
        --out baselines/generate/cosmogan/wl-maps [--max-train N] [--epochs E]

Generator (as the paper's, fewer channels): the latent vector -> a dense layer to ``widths[0]`` x (H/16) x (W/16)
-> four 5x5 transposed convolutions of stride 2, BatchNorm + ReLU between them. Discriminator: four 5x5
convolutions of stride 2 (``disc_widths``), BatchNorm (not on the first) + LeakyReLU(0.2), a linear logit.
Training: the non-saturating GAN loss, Adam (lr 2e-4, beta1 0.5, the paper's), on the public training maps with
random flips, 90-degree rotations and periodic shifts (the maps are periodic). The paper maps pixel values to
[-1, 1] by s(x) = 2x / (x + a) - 1; for convergence maps (which reach down to -kappa0) this baseline uses the
standardised log of (kappa + shift), with ``shift`` just below minus the training maps' minimum, inverted inside the
exported model, so the model returns convergence maps (N, 1, H, W) from latents (N, dim).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from skybench.release.reader import open_release
from skybench.tasks.generate.config import GenerateTrack
from skybench.tracks import load_track
from skybench.training import CurveLogger, export_onnx, fresh_folder, run_cli, start, write_submission

NAME = "cosmogan"


class Generator(nn.Module):
    def __init__(self, dim: int, n_pix: int, widths: list[int]):
        super().__init__()
        self.w0, self.s0 = widths[0], n_pix // 2 ** (len(widths))
        self.dense = nn.Sequential(nn.Linear(dim, widths[0] * self.s0 * self.s0),
                                   nn.BatchNorm1d(widths[0] * self.s0 * self.s0), nn.ReLU())
        layers: list[nn.Module] = []
        chans = [*widths, 1]
        for i in range(len(widths)):
            layers.append(nn.ConvTranspose2d(chans[i], chans[i + 1], 5, 2, padding=2, output_padding=1))
            if i < len(widths) - 1:
                layers += [nn.BatchNorm2d(chans[i + 1]), nn.ReLU()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.dense(z).view(-1, self.w0, self.s0, self.s0))


class Discriminator(nn.Module):
    def __init__(self, n_pix: int, widths: list[int]):
        super().__init__()
        layers: list[nn.Module] = []
        chans = [1, *widths]
        for i in range(len(widths)):
            layers.append(nn.Conv2d(chans[i], chans[i + 1], 5, 2, padding=2))
            if i:
                layers.append(nn.BatchNorm2d(chans[i + 1]))
            layers.append(nn.LeakyReLU(0.2))
        side = n_pix // 2 ** len(widths)
        self.net = nn.Sequential(*layers, nn.Flatten(), nn.Linear(widths[-1] * side * side, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Exported(nn.Module):
    """latents (N, dim) -> convergence maps (N, 1, H, W): the generator and the inverse of the pixel transform."""

    def __init__(self, gen: Generator, shift: float, mu: float, sd: float):
        super().__init__()
        self.gen = gen
        self.shift, self.mu, self.sd = shift, mu, sd

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.gen(z) * self.sd + self.mu) - self.shift


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A random flip, 90-degree rotation and periodic shift per batch."""
    k = int(torch.randint(0, 4, (1,), generator=gen))
    x = torch.rot90(x, k, (2, 3))
    if int(torch.randint(0, 2, (1,), generator=gen)):
        x = torch.flip(x, (3,))
    dy, dx = (int(v) for v in torch.randint(0, x.shape[-1], (2,), generator=gen))
    return torch.roll(x, (dy, dx), (2, 3))


def train(argv: list[str] | None = None) -> tuple[Any, Path]:
    args, params = start(NAME, __doc__, argv)
    track = load_track(args.track)
    if not isinstance(track, GenerateTrack):
        raise SystemExit(f"{NAME}: track {args.track!r} is not a generate track")
    maps = open_release(args.release).array("train", "maps")
    n = len(maps) if args.max_train is None else min(args.max_train, len(maps))
    x = np.asarray(maps[:n], np.float64)
    shift = float(-x.min() + 0.1 * x.std())  # kappa + shift > 0 on the training maps, with a margin
    u = np.log(x + shift)
    mu, sd = float(u.mean()), float(u.std())
    data = torch.from_numpy(((u - mu) / sd).astype(np.float32))
    dim, n_pix = track.population.latent.dim, track.population.n_pix
    gen, disc = Generator(dim, n_pix, list(params["widths"])), Discriminator(n_pix, list(params["disc_widths"]))
    opt_g = torch.optim.Adam(gen.parameters(), lr=float(params["lr"]), betas=(float(params["beta1"]), 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=float(params["lr"]), betas=(float(params["beta1"]), 0.999))
    bce = nn.BCEWithLogitsLoss()
    rng = torch.Generator().manual_seed(int(params["seed"]))
    bs, epochs = int(params["batch_size"]), int(params["epochs"])
    normal = track.population.latent.distribution == "normal"
    with CurveLogger(NAME, args.track, params, enabled=not args.no_mlflow) as log:
        for epoch in range(1, epochs + 1):
            gen.train()
            disc.train()
            order = torch.randperm(n, generator=rng)
            sums, batches = np.zeros(2), 0
            for i in range(0, n - 1, bs):
                real = augment(data[order[i:i + bs]], rng)
                if len(real) < 2:  # BatchNorm needs two samples
                    continue
                z = torch.randn(len(real), dim, generator=rng) if normal else \
                    torch.rand(len(real), dim, generator=rng) * 2 - 1
                fake = gen(z)
                d_real, d_fake = disc(real), disc(fake.detach())
                loss_d = bce(d_real, torch.ones_like(d_real)) + bce(d_fake, torch.zeros_like(d_fake))
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                opt_d.step()
                d_fake = disc(fake)
                loss_g = bce(d_fake, torch.ones_like(d_fake))  # non-saturating generator loss
                opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
                opt_g.step()
                sums += [loss_g.item(), loss_d.item()]
                batches += 1
            g, d = sums / max(batches, 1)
            log.epoch(epoch, loss_generator=g, loss_discriminator=d)
        model = Exported(gen.eval(), shift, mu, sd)
        out = fresh_folder(args.out)
        export_onnx(model, out / "model.onnx", (dim,), "maps")
    write_submission(out, NAME, args.track, "onnx", "model.onnx",
                     f"CosmoGAN DCGAN (Mustafa et al. 2019), generator {params['widths']}, discriminator "
                     f"{params['disc_widths']}, {epochs} epochs on {n} training maps; ONNX")
    print(f"wrote {out} ({epochs} epochs, {n} training maps)")
    return model, out


if __name__ == "__main__":
    run_cli(train)
