"""Autoencoder baseline: a convolutional denoising autoencoder in Keras, exported as ``.keras``.

    python baselines/autoencoder/train.py --track enhance --release releases/enhance \
        --out baselines/autoencoder/enhance [--max-train N] [--epochs E] [--set filters=[16,32]]

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
import tensorflow as tf  # noqa: E402  (also: seed_everything enables TF op determinism when it is imported)

from skybench.release.reader import open_release  # noqa: E402
from skybench.tasks.enhance.metrics import stretched_psnr  # noqa: E402
from skybench.tracks import load_track  # noqa: E402
from skybench.training import (  # noqa: E402
    CurveLogger,
    baseline_params,
    fresh_folder,
    parse_args,
    run_cli,
    seed_everything,
    write_submission,
)

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


def augment(x: np.ndarray, t: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The same random flip and k*90-degree rotation of each (input, truth) pair."""
    xa, ta = x.copy(), t.copy()
    flip, k = rng.random(len(x)) < 0.5, rng.integers(0, 4, len(x))
    for i in range(len(x)):
        a, b = (x[i, :, :, ::-1], t[i, :, :, ::-1]) if flip[i] else (x[i], t[i])
        xa[i], ta[i] = np.rot90(a, k[i], axes=(1, 2)), np.rot90(b, k[i], axes=(1, 2))
    return xa, ta


def train(argv: list[str] | None = None) -> tuple[Any, Path]:
    args = parse_args(__doc__.splitlines()[0], argv)
    params = baseline_params(NAME, args)
    if params.get("cpu_threads"):  # on a shared CPU one thread per process is much faster than contended ones
        try:
            tf.config.threading.set_intra_op_parallelism_threads(int(params["cpu_threads"]))
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # TensorFlow already started in this process (e.g. in the tests): keep its threads
            pass
    seed_everything(int(params["seed"]))
    bands = load_track(args.track).band_names
    rel = open_release(args.release)
    deg = rel.manifest.get("degradation")
    if not deg:
        raise ValueError(f"{args.release}: no 'degradation' in the manifest; is it an enhance release?")
    sigma = np.array([deg["sigma_degraded"][b] for b in bands])
    low = [float(deg["display_stretch"]["low"][b]) for b in bands]
    high = [float(deg["display_stretch"]["high"][b]) for b in bands]
    n = len(rel.images("train")) if args.max_train is None else min(args.max_train, len(rel.images("train")))
    x, t = (np.asarray(rel.array("train", a)[:n], dtype=np.float32) for a in ("images", "truth"))
    xv, tv = (np.asarray(rel.array("val", a)[:], dtype=np.float32) for a in ("images", "truth"))
    model = build(params, len(bands), x.shape[-1], sigma)
    model.compile(optimizer=keras.optimizers.Adam(float(params["lr"])), loss="mae")
    rng = np.random.default_rng(int(params["seed"]))
    out = fresh_folder(args.out)
    best: tuple[int, float, Any] = (0, -np.inf, None)
    with CurveLogger(NAME, args.track, {**params, "sigma": sigma.tolist()}, enabled=not args.no_mlflow) as log:
        for epoch in range(1, int(params["epochs"]) + 1):
            xa, ta = augment(x, t, rng)
            hist = model.fit(xa, ta, batch_size=int(params["batch_size"]), epochs=1, verbose=0, shuffle=True)
            pred = model.predict(xv, batch_size=128, verbose=0)
            val_psnr = float(np.mean(stretched_psnr(pred, tv, low, high)))
            val_mae = float(np.mean(np.abs(pred - tv)))
            log.epoch(epoch, loss=float(hist.history["loss"][-1]), val_loss=val_mae, val_psnr=val_psnr)
            if val_psnr > best[1]:
                best = (epoch, val_psnr, model.get_weights())
        model.set_weights(best[2])
        print(f"kept epoch {best[0]} (best val PSNR {best[1]:.2f} dB)")
        log.summary(val_psnr=best[1], best_epoch=best[0])
    model.save(out / "model.keras")
    write_submission(out, NAME, args.track, "keras", "model.keras",
                     f"convolutional denoising autoencoder (filters {params['filters']}, residual output), "
                     f"MAE loss; Keras")
    print(f"wrote {out} (val PSNR {best[1]:.2f} dB)")
    return model, out


if __name__ == "__main__":
    run_cli(train)
