"""CNN baseline: the classic small Keras CNN, adapted to lens cut-outs, exported as ``.keras``.

    python baselines/lens/cnn/train.py --track lens-space --release releases/lens-space \
        --out baselines/lens/cnn/lens-space [--max-train N] [--epochs E] [--set dense=64]
        [--also releases/lens-space-realsrc[:WEIGHT] --name NAME]   # a mixture (training/mixture.py)

The teaching example's network (Conv2D 32 5x5 - MaxPool - Conv2D 64 5x5 - MaxPool - Dense 1000 - output),
with a sigmoid output for lens / non-lens. Everything between the raw cut-out and the score is a built-in
Keras layer, so the file loads with ``safe_mode=True`` and no custom objects:

    Permute         (bands, H, W) channels-first input -> channels-last
    RandomFlip      horizontal and vertical flips while training (``augment``; inactive when predicting)
    Cropping2D      central ``crop`` x ``crop`` pixels (the arcs lie within a few arcsec of the centre)
    Normalization   fixed mean 0 and variance (clip_sigma * noise sigma)^2 per band: x / (clip_sigma sigma)
    softsign        x / (1 + |x|): linear for faint pixels, soft clip of bright cores at ~clip_sigma sigma
    Rescaling       by clip_sigma / 10: the noise has a standard deviation of ~0.1
    AveragePooling  by ``pool`` (2: 4x fewer pixels, for the CPU demo; 1 keeps the full resolution)

The per-band noise sigma is 1.4826 MAD of the training set's border pixels. Adam, binary cross-entropy;
seeded, with TensorFlow op determinism. TensorFlow uses a GPU by itself when it sees one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402, F401  (imported so that seed_everything enables TF op determinism)

from skybench.training import (  # noqa: E402
    CurveLogger,
    KeepBest,
    binary_metrics,
    fresh_folder,
    keras_epoch_callback,
    load_training,
    mixture_note,
    noise_sigma,
    predict_batches,
    run_cli,
    save_keras,
    start,
    write_submission,
)

NAME = "cnn"


def build(params: dict, bands: int, size: int, sigma: np.ndarray) -> keras.Model:
    crop = int(params["crop"]) if params["crop"] and int(params["crop"]) < size else size
    a = (size - crop) // 2
    clip = float(params["clip_sigma"])
    f1, f2 = (int(f) for f in params["filters"])
    layers = keras.layers
    augment = [layers.RandomFlip("horizontal_and_vertical", seed=int(params["seed"]))] if params["augment"] else []
    return keras.Sequential([
        keras.Input((bands, size, size)),
        layers.Permute((2, 3, 1)),
        *augment,
        layers.Cropping2D(((a, size - crop - a), (a, size - crop - a))),
        layers.Normalization(axis=-1, mean=[0.0] * bands, variance=[float(s * clip) ** 2 for s in sigma]),
        layers.Activation("softsign"),
        layers.Rescaling(clip / 10.0),
        layers.AveragePooling2D(int(params["pool"])),
        layers.Conv2D(f1, 5, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Conv2D(f2, 5, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dense(int(params["dense"]), activation="relu"),
        layers.Dropout(float(params["dropout"])),
        layers.Dense(1, activation="sigmoid"),
    ], name="lens_cnn")


def predict(model: keras.Model, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Scores (N,) batch by batch (``model.predict`` builds a tf.data pipeline per call)."""
    return predict_batches(lambda b: np.asarray(model.predict_on_batch(b)).reshape(-1), [x], batch_size)


def train(argv: list[str] | None = None) -> tuple[Any, Path]:
    """Train from the command line ``argv``; return (the trained in-framework model, the submission folder)."""
    args, params = start(NAME, __doc__, argv, mixture=True)
    x, y = load_training(args, params, "train")
    xv, yv = load_training(args, params, "val")
    sigma = noise_sigma(x)
    model = build(params, x.shape[1], x.shape[-1], sigma)
    model.compile(optimizer=keras.optimizers.Adam(float(params["lr"])), loss="binary_crossentropy")
    out = fresh_folder(args.out)
    bs = int(params["batch_size"])
    with CurveLogger(args.name, args.track, {**params, "sigma": sigma.tolist()}, enabled=not args.no_mlflow) as log:
        def validate(m: keras.Model, epoch: int, logs: dict) -> dict[str, float]:
            val = binary_metrics(yv, predict(m, xv, 256))
            log.epoch(epoch, loss=float(logs.get("loss", np.nan)), val_loss=val["loss"], val_auroc=val["auroc"])
            return val

        keep = KeepBest("auroc", nan_is_best=True, enabled=bool(params["keep_best"]))
        curves = keras_epoch_callback(validate, keep, "AUROC")
        model.fit(x, y.astype(np.float32), batch_size=bs, epochs=int(params["epochs"]), shuffle=True, verbose=0,
                  callbacks=[curves])
        save_keras(model, out / "model.keras")
        log.summary(val_auroc=curves.last.get("auroc", np.nan), val_loss=curves.last.get("loss", np.nan),
                    best_epoch=keep.epoch)
    write_submission(out, args.name, args.track, "keras", "model.keras",
                     f"classic small CNN (conv {params['filters']}, dense {params['dense']}) on the central "
                     f"{params['crop']} px, noise-normalised and soft-clipped at {params['clip_sigma']} sigma; Keras"
                     + mixture_note(args))
    print(f"wrote {out} (val AUROC {curves.last.get('auroc', float('nan')):.4f})")
    return model, out


if __name__ == "__main__":
    run_cli(train)
