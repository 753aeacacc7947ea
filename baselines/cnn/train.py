"""CNN baseline: the classic small Keras CNN, adapted to lens cut-outs, exported as ``.keras``.

    python baselines/cnn/train.py --track lens-space --release releases/lens-space \
        --out baselines/cnn/lens-space [--max-train N] [--epochs E] [--set dense=64]

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
    baseline_params,
    binary_metrics,
    fresh_folder,
    load_split,
    noise_sigma,
    parse_args,
    run_cli,
    seed_everything,
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
    out = [np.asarray(model.predict_on_batch(x[i:i + batch_size])).reshape(-1) for i in range(0, len(x), batch_size)]
    return np.concatenate(out) if out else np.empty(0, np.float32)


class Curves(keras.callbacks.Callback):
    """Validation loss and AUROC at the end of every epoch, logged with the training loss; with ``keep_best``
    the weights of the epoch with the best validation AUROC are restored at the end of training."""

    def __init__(self, log: CurveLogger, xv: np.ndarray, yv: np.ndarray, batch_size: int, keep_best: bool):
        super().__init__()
        self.log, self.xv, self.yv, self.batch_size, self.keep_best = log, xv, yv, batch_size, keep_best
        self.last: dict[str, float] = {}
        self.best: tuple[int, dict[str, float], list | None] = (0, {"auroc": -np.inf}, None)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        pred = predict(self.model, self.xv, self.batch_size)
        self.last = binary_metrics(self.yv, pred)
        self.log.epoch(epoch + 1, loss=float((logs or {}).get("loss", np.nan)), val_loss=self.last["loss"],
                       val_auroc=self.last["auroc"])
        if self.keep_best and not self.last["auroc"] <= self.best[1]["auroc"]:  # NaN (one class) counts as best
            self.best = (epoch + 1, self.last, self.model.get_weights())

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.keep_best and self.best[2] is not None:
            self.model.set_weights(self.best[2])
            self.last = self.best[1]
            print(f"kept epoch {self.best[0]} (best val AUROC)")


def train(argv: list[str] | None = None) -> tuple[Any, Path]:
    """Train from the command line ``argv``; return (the trained in-framework model, the submission folder)."""
    args = parse_args(__doc__.splitlines()[0], argv)
    params = baseline_params(NAME, args)
    seed_everything(int(params["seed"]))
    x, y = load_split(args.release, "train", args.max_train)
    xv, yv = load_split(args.release, "val")
    sigma = noise_sigma(x)
    model = build(params, x.shape[1], x.shape[-1], sigma)
    model.compile(optimizer=keras.optimizers.Adam(float(params["lr"])), loss="binary_crossentropy")
    out = fresh_folder(args.out)
    bs = int(params["batch_size"])
    with CurveLogger(NAME, args.track, {**params, "sigma": sigma.tolist()}, enabled=not args.no_mlflow) as log:
        curves = Curves(log, xv, yv, 256, bool(params["keep_best"]))
        model.fit(x, y.astype(np.float32), batch_size=bs, epochs=int(params["epochs"]), shuffle=True, verbose=0,
                  callbacks=[curves])
        model.save(out / "model.keras")
        log.summary(val_auroc=curves.last.get("auroc", np.nan), val_loss=curves.last.get("loss", np.nan),
                    best_epoch=curves.best[0])
    write_submission(out, NAME, args.track, "keras", "model.keras",
                     f"classic small CNN (conv {params['filters']}, dense {params['dense']}) on the central "
                     f"{params['crop']} px, noise-normalised and soft-clipped at {params['clip_sigma']} sigma; Keras")
    print(f"wrote {out} (val AUROC {curves.last.get('auroc', float('nan')):.4f})")
    return model, out


if __name__ == "__main__":
    run_cli(train)
