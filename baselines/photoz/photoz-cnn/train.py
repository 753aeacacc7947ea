"""Photo-z CNN baseline: a Keras CNN on the ugriz cut-outs plus E(B-V) that classifies over the track's redshift
bins and outputs a PDF (softmax), as Pasquet et al. 2019 (arXiv:1806.06607) do; exported as ``.keras``.

    python baselines/photoz/photoz-cnn/train.py --track photoz-images --release releases/photoz-images \
        --out baselines/photoz/photoz-cnn/photoz-images [--max-train N] [--epochs E] [--set dense=64]

Inputs as the runner gives them: images (B, 5, 64, 64) in e-/s and features (B, 1) = Galactic E(B-V). Only
built-in Keras layers (the file loads with ``safe_mode=True`` and no custom objects):

    Permute, Normalization      channels-last, pixels in units of each band's noise sigma (1.4826 MAD of the
                                training set's border pixels)
    photometry branch           for central square apertures of ``apertures`` pixels: the mean flux per band
                                (Cropping2D + GlobalAveragePooling2D); its direction (UnitNormalization over the
                                bands: flux ratios, i.e. colours, independent of brightness) and its size (softsign
                                at 3, 30 and 300 sigma); the ratio of apertures measures the light profile
    image branch                central ``crop`` px, softsign soft clip at ``clip_sigma`` sigma, average pooling by
                                ``pool``, three Conv2D (3x3, ReLU) + pooling, global average pooling: morphology,
                                angular size, colour gradients
    head                        [photometry, image, 10 E(B-V)] -> BatchNormalization -> Dense ``dense`` x2 (ReLU,
                                dropout) -> Dense K softmax: probabilities of the K redshift bins of the track's grid

Loss: cross-entropy against the true bin, smoothed by a Gaussian of ``label_sigma`` bins. Random flips while
training. Adam; seeded with TensorFlow op determinism. The epoch with the best validation sigma_MAD (of the PDF
mean, the track's point estimate) is exported (``keep_best``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402, F401  (imported so that seed_everything enables TF op determinism)

from skybench.tracks import load_track  # noqa: E402
from skybench.training import (  # noqa: E402
    CurveLogger,
    KeepBest,
    fresh_folder,
    keras_epoch_callback,
    noise_sigma,
    predict_batches,
    run_cli,
    save_keras,
    start,
    write_submission,
)
from skybench.training.photoz import load_photoz_split, pdf_point_estimate, val_metrics, z_bins  # noqa: E402

NAME = "photoz-cnn"
BRIGHTNESS_SCALES = (3.0, 30.0, 300.0)  # sigma: softsign(flux / s) resolves faint to bright galaxies


def _centre(layers: Any, x: Any, size: int, keep: int) -> Any:
    a = (size - keep) // 2
    return layers.Cropping2D(((a, size - keep - a), (a, size - keep - a)))(x) if keep < size else x


def build(params: dict, bands: int, size: int, n_features: int, sigma: np.ndarray, n_bins: int) -> keras.Model:
    layers = keras.layers
    img = keras.Input((bands, size, size), name="images")
    feat = keras.Input((n_features,), name="features")
    x = layers.Permute((2, 3, 1))(img)
    x = layers.Normalization(axis=-1, mean=[0.0] * bands, variance=[float(s) ** 2 for s in sigma])(x)
    x = layers.RandomFlip("horizontal_and_vertical", seed=int(params["seed"]))(x)
    # Photometry branch: aperture fluxes, their colours and brightness.
    phot = []
    for ap in params["apertures"]:
        flux = layers.GlobalAveragePooling2D()(_centre(layers, x, size, min(int(ap), size)))
        phot.append(layers.UnitNormalization(axis=-1)(flux))
        phot += [layers.Activation("softsign")(layers.Rescaling(1.0 / s)(flux)) for s in BRIGHTNESS_SCALES]
    # Image branch: morphology.
    clip = float(params["clip_sigma"])
    y = _centre(layers, x, size, min(int(params["crop"]), size))
    y = layers.Rescaling(clip / 10.0)(layers.Activation("softsign")(layers.Rescaling(1.0 / clip)(y)))
    if int(params["pool"]) > 1:
        y = layers.AveragePooling2D(int(params["pool"]))(y)
    for i, f in enumerate(params["filters"]):
        y = layers.Conv2D(int(f), 3, padding="same", activation="relu")(y)
        if i < len(params["filters"]) - 1:
            y = layers.MaxPooling2D(2)(y)
    y = layers.GlobalAveragePooling2D()(y)
    h = layers.Concatenate()([*phot, y, layers.Rescaling(10.0)(feat)])
    h = layers.BatchNormalization()(h)
    for _ in range(2):
        h = layers.Dense(int(params["dense"]), activation="relu")(h)
        h = layers.Dropout(float(params["dropout"]))(h)
    out = layers.Dense(n_bins, activation="softmax", name="pdf")(h)
    return keras.Model([img, feat], out, name="photoz_cnn")


def soft_labels(z: np.ndarray, edges: np.ndarray, sigma_bins: float) -> np.ndarray:
    """(N, K) targets: the true bin, smoothed by a Gaussian of ``sigma_bins`` bins (one-hot when 0)."""
    k = np.clip(np.searchsorted(edges, z, side="right") - 1, 0, len(edges) - 2)
    if sigma_bins <= 0:
        return np.eye(len(edges) - 1, dtype=np.float32)[k]
    d = np.arange(len(edges) - 1)[None, :] - k[:, None]
    t = np.exp(-0.5 * (d / sigma_bins) ** 2)
    return (t / t.sum(axis=1, keepdims=True)).astype(np.float32)


def predict(model: keras.Model, x: np.ndarray, f: np.ndarray, batch_size: int = 256) -> np.ndarray:
    return predict_batches(lambda xb, fb: model.predict_on_batch([xb, fb]), [x, f], batch_size)


def train(argv: list[str] | None = None) -> tuple[Any, Path]:
    args, params = start(NAME, __doc__, argv)
    track = load_track(args.track)
    centres, edges = z_bins(track)
    x, z = load_photoz_split(args.release, "train", "images", args.max_train)
    f, _ = load_photoz_split(args.release, "train", "features", args.max_train)
    xv, zv = load_photoz_split(args.release, "val", "images")
    fv, _ = load_photoz_split(args.release, "val", "features")
    sigma = noise_sigma(x)
    model = build(params, x.shape[1], x.shape[-1], f.shape[1], sigma, len(centres))
    model.compile(optimizer=keras.optimizers.Adam(float(params["lr"])), loss="categorical_crossentropy")
    targets = soft_labels(z, edges, float(params["label_sigma"]))
    out = fresh_folder(args.out)
    with CurveLogger(NAME, args.track, {**params, "sigma": sigma.tolist()}, enabled=not args.no_mlflow) as log:
        def validate(m: keras.Model, epoch: int, logs: dict) -> dict[str, float]:
            val = val_metrics(pdf_point_estimate(predict(m, xv, fv), centres), zv)
            log.epoch(epoch, loss=float(logs.get("loss", np.nan)), val_sigma_mad=val["sigma_mad"],
                      val_outlier_frac=val["outlier_frac"])
            return val

        keep = KeepBest("sigma_mad", "min", enabled=bool(params["keep_best"]))
        curves = keras_epoch_callback(validate, keep, "sigma_MAD")
        model.fit([x, f], targets, batch_size=int(params["batch_size"]), epochs=int(params["epochs"]), shuffle=True,
                  verbose=0, callbacks=[curves])
        save_keras(model, out / "model.keras")
        log.summary(val_sigma_mad=curves.last.get("sigma_mad", np.nan), best_epoch=keep.epoch)
    write_submission(out, NAME, args.track, "keras", "model.keras",
                     f"CNN (conv {params['filters']}) + aperture photometry on the ugriz cut-outs and E(B-V); softmax "
                     f"over {len(centres)} redshift bins (PDF), as Pasquet et al. 2019; Keras")
    print(f"wrote {out} (val sigma_MAD {curves.last.get('sigma_mad', float('nan')):.5f})")
    return model, out


if __name__ == "__main__":
    run_cli(train)
