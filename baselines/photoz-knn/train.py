"""Photo-z k-NN baseline: scikit-learn k-nearest-neighbour regression on magnitudes and colours (in the style of
Beck et al. 2016, MNRAS 460, 1371), exported with skops.

    python baselines/photoz-knn/train.py --track photoz-catalog --release releases/photoz-catalog \
        --out baselines/photoz-knn/photoz-catalog

One Pipeline on the track's catalogue features (names from the release manifest):

    magcol   FunctionTransformer(numpy.dot): the five magnitudes u..z and the four colours u-g, g-r, r-i, i-z
    scale    StandardScaler
    knn      KNeighborsRegressor(``n_neighbors``, weights=``weights``): z_phot (a point estimate, shape (N,))

The model is fitted on train, scored on val (logged to MLflow), then refitted on train + val (``refit_on_val``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import skops.io as sio
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from skybench.photoz_train import feature_names, load_photoz_split, mag_colour_step, val_metrics
from skybench.train import (
    CurveLogger,
    baseline_params,
    fresh_folder,
    parse_args,
    run_cli,
    seed_everything,
    write_submission,
)

NAME = "photoz-knn"


def fit(params: dict, names: list[str], x: np.ndarray, z: np.ndarray) -> Pipeline:
    model = Pipeline([("magcol", mag_colour_step(names)), ("scale", StandardScaler()),
                      ("knn", KNeighborsRegressor(int(params["n_neighbors"]), weights=params["weights"]))])
    return model.fit(x.astype(np.float64), z)


def train(argv: list[str] | None = None) -> tuple[Any, Path]:
    args = parse_args(__doc__.splitlines()[0], argv)
    params = baseline_params(NAME, args)
    seed_everything(int(params["seed"]))
    names = feature_names(args.release)
    x, z = load_photoz_split(args.release, "train", max_n=args.max_train)
    xv, zv = load_photoz_split(args.release, "val")
    params["n_neighbors"] = min(int(params["n_neighbors"]), len(x))
    out = fresh_folder(args.out)
    with CurveLogger(NAME, args.track, params, enabled=not args.no_mlflow) as log:
        model = fit(params, names, x, z)
        val = val_metrics(model.predict(xv), zv)
        log.epoch(1, val_sigma_mad=val["sigma_mad"], val_outlier_frac=val["outlier_frac"])
        if params["refit_on_val"]:
            model = fit(params, names, np.concatenate([x, xv]), np.concatenate([z, zv]))
        sio.dump(model, out / "model.skops")
        log.summary(val_sigma_mad=val["sigma_mad"])
    write_submission(out, NAME, args.track, "sklearn", "model.skops",
                     f"k-NN regression (k={params['n_neighbors']}, {params['weights']} weights) on the standardised "
                     "ugriz magnitudes and 4 colours; point estimate; skops")
    print(f"wrote {out} (val sigma_MAD {val['sigma_mad']:.5f}, eta {val['outlier_frac']:.4f})")
    return model, out


if __name__ == "__main__":
    run_cli(train)
