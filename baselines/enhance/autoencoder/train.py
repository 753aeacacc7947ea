"""Autoencoder baseline: a convolutional denoising autoencoder in Keras, exported as ``.keras``.

    python baselines/enhance/autoencoder/train.py --track enhance --release releases/enhance \
        --out baselines/enhance/autoencoder/enhance [--max-train N] [--epochs E] [--set filters=[16,32]]

Encoder: strided 3x3 convolutions (``filters``, stride 2 each, ReLU); decoder: the mirror image with transposed
convolutions and a linear output, added to the input (the network learns the correction; Mao et al. 2016,
arXiv:1603.09056, use the same encoder-decoder with a residual for restoration). Everything between the raw cut-out
and the output is a built-in Keras layer, so the file loads with ``safe_mode=True``:

    Permute                 (bands, H, W) channels-first input -> channels-last
    Normalization           x / (stretch_sigma * noise sigma) per band (noise sigma: ``degradation.sigma_degraded``
                            of the release manifest)
    softsign, Rescaling     the network sees x/(1+|x|) (a soft stretch) and x/100 (the bright cores)
    ... encoder, decoder ...
    Add                     normalised input + decoder output
    Normalization(invert)   back to e-/s per pixel; Permute back to channels-first

Loss: mean absolute error on the flux, Adam; random flips and 90-degree rotations of the (input, truth) pairs;
the weights of the epoch with the best validation PSNR (the primary metric) are kept. Seeded, TF op determinism.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402, F401  (imported so that start() sets TF threads and op determinism)

from skybench.tracks import load_track  # noqa: E402
from skybench.training import (  # noqa: E402
    CurveLogger,
    KeepBest,
    dihedral_numpy,
    fresh_folder,
    run_cli,
    save_keras,
    start,
    write_submission,
)
from skybench.training.enhance import load_pairs, read_degradation, val_psnr  # noqa: E402

NAME = "autoencoder"


def build(params: dict, bands: int, size: int, sigma: np.ndarray) -> keras.Model:
    layers = keras.layers
    scale = float(params["stretch_sigma"]) * np.asarray(sigma, dtype=np.float64)
    filters = [int(f) for f in params["filters"]]
    inp = keras.Input((bands, size, size))
    x = layers.Permute((2, 3, 1))(inp)
    norm = layers.Normalization(axis=-1, mean=np.zeros(bands), variance=scale**2)(x)
    h = layers.Concatenate()([layers.Activation("softsign")(norm), layers.Rescaling(0.01)(norm)])
    for f in filters:
        h = layers.Conv2D(f, 3, strides=2, padding="same", activation="relu")(h)
    for f in filters[::-1][1:]:
        h = layers.Conv2DTranspose(f, 3, strides=2, padding="same", activation="relu")(h)
    # zero-initialised output: training starts from the identity (the enhanced image = the input)
    h = layers.Conv2DTranspose(bands, 3, strides=2, padding="same", kernel_initializer="zeros")(h)
    out = layers.Normalization(axis=-1, mean=np.zeros(bands), variance=scale**2, invert=True)(layers.Add()([norm, h]))
    return keras.Model(inp, layers.Permute((3, 1, 2))(out), name="denoising_autoencoder")


def train(argv: list[str] | None = None) -> tuple[Any, Path]:
    args, params = start(NAME, __doc__, argv)
    bands = load_track(args.track).band_names
    deg = read_degradation(args.release, bands)
    x, t = load_pairs(args.release, "train", args.max_train)
    xv, tv = load_pairs(args.release, "val")
    model = build(params, len(bands), x.shape[-1], deg.sigma)
    model.compile(optimizer=keras.optimizers.Adam(float(params["lr"])), loss="mae")
    rng = np.random.default_rng(int(params["seed"]))
    out = fresh_folder(args.out)
    keep = KeepBest("psnr")
    with CurveLogger(NAME, args.track, {**params, "sigma": deg.sigma.tolist()}, enabled=not args.no_mlflow) as log:
        for epoch in range(1, int(params["epochs"]) + 1):
            xa, ta = dihedral_numpy([x, t], rng)
            hist = model.fit(xa, ta, batch_size=int(params["batch_size"]), epochs=1, verbose=0, shuffle=True)
            pred = model.predict(xv, batch_size=128, verbose=0)
            psnr = val_psnr(pred, tv, deg)
            val_mae = float(np.mean(np.abs(pred - tv)))
            log.epoch(epoch, loss=float(hist.history["loss"][-1]), val_loss=val_mae, val_psnr=psnr)
            keep.update(epoch, {"psnr": psnr}, model.get_weights)
        model.set_weights(keep.state)
        print(f"kept epoch {keep.epoch} (best val PSNR {keep.value:.2f} dB)")
        log.summary(val_psnr=keep.value, best_epoch=keep.epoch)
    save_keras(model, out / "model.keras")
    write_submission(out, NAME, args.track, "keras", "model.keras",
                     f"convolutional denoising autoencoder (filters {params['filters']}, residual output), "
                     f"MAE loss; Keras")
    print(f"wrote {out} (val PSNR {keep.value:.2f} dB)")
    return model, out


if __name__ == "__main__":
    run_cli(train)
