"""GAN baseline: a pix2pix conditional GAN (Isola et al. 2017, arXiv:1611.07004) as in Schawinski et al. 2017.

    python baselines/enhance/gan/train.py --track enhance --release releases/enhance \
        --out baselines/enhance/gan/enhance \
        [--max-train N] [--epochs E] [--set widths=[16,32]]

Generator: a U-Net (strided 4x4 convolutions down, transposed convolutions up, skip connections; BatchNorm and
LeakyReLU/ReLU as pix2pix) that sees the asinh-stretched input and predicts a flux correction added to the input.
Discriminator: a PatchGAN that classifies overlapping patches of the (input, image) pair as real or generated.
Loss: adversarial (binary cross-entropy on the patch logits) + ``l1_weight`` x L1 to the truth (pix2pix and
Schawinski: 100), both on the stretched images as in Schawinski et al.; Adam with beta1 0.5, the learning rate
constant and then decaying linearly to zero over the last ``decay_epochs`` (pix2pix's schedule).

The display stretch belongs to the method and is inside the exported model: each band is divided by
``stretch_sigma`` x its input noise sigma (from the release manifest's ``degradation.sigma_degraded``) and put
through arcsinh; the generator's output, in units of that scale, is added to the input (e-/s per pixel).
Training: random flips and 90-degree rotations of the (input, truth) pair, on random ``crop`` x ``crop``
windows, on CUDA when available; the epoch with the best validation PSNR (the track's primary metric) is exported
to ONNX. Curves of both losses (generator: adversarial, L1 and total; discriminator) and the validation PSNR go
to MLflow.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from skybench.tracks import load_track
from skybench.training import (
    CurveLogger,
    KeepBest,
    dihedral_torch,
    export_onnx,
    fresh_folder,
    predict_batches,
    run_cli,
    start,
    write_submission,
)
from skybench.training.enhance import load_pairs, read_degradation, val_psnr

NAME = "gan"


class Stretch(nn.Module):
    """e-/s -> asinh(x / (k sigma_b)): the method's display stretch, part of the model."""

    def __init__(self, sigma: np.ndarray, k: float):
        super().__init__()
        self.register_buffer("scale", torch.as_tensor(k * np.asarray(sigma), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x / self.scale
        # asinh(z) = sign(z) ln(|z| + sqrt(z^2 + 1)), spelled out: the ONNX exporter has no aten::asinh
        return torch.sign(z) * torch.log(torch.abs(z) + torch.sqrt(z * z + 1.0))


def down(cin: int, cout: int, norm: bool = True) -> nn.Sequential:
    """pix2pix encoder block: Conv 4x4 stride 2, BatchNorm, LeakyReLU(0.2)."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 4, 2, 1, bias=not norm)]
    if norm:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.LeakyReLU(0.2))
    return nn.Sequential(*layers)


def up(cin: int, cout: int) -> nn.Sequential:
    """pix2pix decoder block: ConvTranspose 4x4 stride 2, BatchNorm, ReLU."""
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class UNet(nn.Module):
    """U-Net generator on stretched images; returns a correction (same shape) in units of the stretch scale."""

    def __init__(self, bands: int, widths: list[int]):
        super().__init__()
        self.downs = nn.ModuleList([down(c_in, c_out, norm=i > 0) for i, (c_in, c_out) in
                                    enumerate(zip([bands, *widths[:-1]], widths, strict=True))])
        rev = widths[::-1]
        self.ups = nn.ModuleList([up(rev[0], rev[1])] + [up(2 * c_in, c_out) for c_in, c_out in
                                                          zip(rev[1:-1], rev[2:], strict=True)])
        self.out = nn.ConvTranspose2d(2 * widths[0], bands, 4, 2, 1)
        nn.init.zeros_(self.out.weight)  # start from the identity: the enhanced image = the input
        nn.init.zeros_(self.out.bias)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        skips, h = [], s
        for d in self.downs:
            h = d(h)
            skips.append(h)
        for i, u in enumerate(self.ups):
            h = u(h if i == 0 else torch.cat([h, skips[-1 - i]], dim=1))
        return self.out(torch.cat([h, skips[0]], dim=1))


class PatchGAN(nn.Module):
    """Discriminator: patch logits of the (input, image) pair (pix2pix's PatchGAN, fewer layers for 64x64)."""

    def __init__(self, bands: int, widths: list[int]):
        super().__init__()
        layers: list[nn.Module] = [down(2 * bands, widths[0], norm=False)]
        layers += [down(c_in, c_out) for c_in, c_out in zip(widths[:-2], widths[1:-1], strict=True)]
        layers += [nn.Conv2d(widths[-2], widths[-1], 4, 1, 1, bias=False), nn.BatchNorm2d(widths[-1]),
                   nn.LeakyReLU(0.2), nn.Conv2d(widths[-1], 1, 4, 1, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, s_in: torch.Tensor, s_img: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([s_in, s_img], dim=1))


class Enhancer(nn.Module):
    """The exported model: (N, bands, H, W) degraded e-/s -> enhanced e-/s."""

    def __init__(self, stretch: Stretch, gen: UNet):
        super().__init__()
        self.stretch, self.gen = stretch, gen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gen(self.stretch(x)) * self.stretch.scale


def augment_pair(a: torch.Tensor, b: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random flip and k*90-degree rotation for each (input, truth) pair."""
    out_a, out_b = dihedral_torch([a, b], gen)
    return out_a, out_b


def random_crop(a: torch.Tensor, b: torch.Tensor, size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random ``size`` x ``size`` window of each (input, truth) pair, a different one per pair (the
    networks are fully convolutional: training on windows is cheaper, and the exported model takes whole cut-outs)."""
    n = a.shape[-1]
    if size >= n:
        return a, b
    corners = torch.randint(0, n - size + 1, (len(a), 2), generator=gen).tolist()
    return (torch.stack([a[k, :, i:i + size, j:j + size] for k, (i, j) in enumerate(corners)]),
            torch.stack([b[k, :, i:i + size, j:j + size] for k, (i, j) in enumerate(corners)]))


@torch.no_grad()
def enhance(model: nn.Module, x: np.ndarray, batch: int = 128) -> np.ndarray:
    model.eval()
    dev = next(model.parameters()).device
    return predict_batches(lambda b: model(torch.from_numpy(b).to(dev)).cpu().numpy(), [x], batch)


def train(argv: list[str] | None = None) -> tuple[Any, Path]:
    args, params = start(NAME, __doc__, argv)
    bands = load_track(args.track).band_names
    x, t = load_pairs(args.release, "train", args.max_train)
    xv, tv = load_pairs(args.release, "val")
    deg = read_degradation(args.release, bands)
    sigma = deg.sigma.astype(np.float32)
    stretch = Stretch(sigma, float(params["stretch_sigma"]))
    gen_net, disc = UNet(len(bands), list(params["widths"])), PatchGAN(len(bands), list(params["disc_widths"]))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = Enhancer(stretch, gen_net).to(device)
    disc = disc.to(device)
    betas = (float(params["beta1"]), 0.999)
    opt_g = torch.optim.Adam(gen_net.parameters(), lr=float(params["lr"]), betas=betas)
    opt_d = torch.optim.Adam(disc.parameters(), lr=float(params["lr"]), betas=betas)
    # pix2pix schedule: constant learning rate, then linear decay to 0 over the last ``decay_epochs`` epochs
    epochs = int(params["epochs"])
    decay = max(1, min(int(params["decay_epochs"]), epochs))  # --epochs below decay_epochs: decay over all
    scheds = [torch.optim.lr_scheduler.LambdaLR(o, lambda e: min(1.0, (epochs - e) / decay))
              for o in (opt_g, opt_d)]
    bce, lam = nn.BCEWithLogitsLoss(), float(params["l1_weight"])
    rng = torch.Generator().manual_seed(int(params["seed"]))
    xt, tt = torch.from_numpy(x), torch.from_numpy(t)
    bs = int(params["batch_size"])
    crop = int(params["crop"])
    out = fresh_folder(args.out)
    keep = KeepBest("psnr")
    with CurveLogger(NAME, args.track, {**params, "sigma": sigma.tolist(), "device": device},
                     enabled=not args.no_mlflow) as log:
        for epoch in range(1, epochs + 1):
            model.train()
            disc.train()
            sums = np.zeros(4)
            order = torch.randperm(len(xt), generator=rng)
            batches = 0
            for i in range(0, len(order), bs):
                idx = order[i:i + bs]
                if len(idx) < 2:  # BatchNorm needs two samples
                    continue
                xb, tb = (a.to(device) for a in random_crop(*augment_pair(xt[idx], tt[idx], rng), crop, rng))
                s_in, s_true = stretch(xb), stretch(tb)
                x_fake = xb + gen_net(s_in) * stretch.scale
                s_fake = stretch(x_fake)
                # discriminator: real pairs -> 1, generated pairs -> 0
                real, fake = disc(s_in, s_true), disc(s_in, s_fake.detach())
                loss_d = 0.5 * (bce(real, torch.ones_like(real)) + bce(fake, torch.zeros_like(fake)))
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                opt_d.step()
                # generator: fool the discriminator + lambda * L1 to the truth (pix2pix Eq. 4)
                fake = disc(s_in, s_fake)
                loss_adv = bce(fake, torch.ones_like(fake))
                loss_l1 = torch.mean(torch.abs(s_fake - s_true))
                loss_g = loss_adv + lam * loss_l1
                opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
                opt_g.step()
                sums += [loss_g.item(), loss_adv.item(), loss_l1.item(), loss_d.item()]
                batches += 1
            for sched in scheds:
                sched.step()
            psnr = val_psnr(enhance(model, xv), tv, deg)
            g, adv, l1, d = sums / max(batches, 1)
            log.epoch(epoch, loss_generator=g, loss_generator_adv=adv, loss_l1=l1, loss_discriminator=d,
                      val_psnr=psnr, lr=scheds[0].get_last_lr()[0])
            keep.update(epoch, {"psnr": psnr}, lambda: copy.deepcopy(model.state_dict()))
        model.load_state_dict(keep.state)
        print(f"kept epoch {keep.epoch} (best val PSNR {keep.value:.2f} dB)")
        export_onnx(model, out / "model.onnx", x.shape[1:], "enhanced")
        log.summary(val_psnr=keep.value, best_epoch=keep.epoch)
    write_submission(out, NAME, args.track, "onnx", "model.onnx",
                     f"pix2pix conditional GAN (U-Net {params['widths']}, PatchGAN {params['disc_widths']}, "
                     f"L1 x {lam:g} + adversarial) on asinh-stretched images; ONNX")
    print(f"wrote {out} (val PSNR {keep.value:.2f} dB)")
    return model.eval(), out


if __name__ == "__main__":
    run_cli(train)
