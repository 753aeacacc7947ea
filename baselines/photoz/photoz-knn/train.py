"""Photo-z k-NN baseline: scikit-learn k-nearest-neighbour regression on magnitudes and colours (in the style of
Beck et al. 2016, MNRAS 460, 1371), exported with skops.

    python baselines/photoz/photoz-knn/train.py --track photoz-catalog --release releases/photoz-catalog \
        --out baselines/photoz/photoz-knn/photoz-catalog

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
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from skybench.training import run_cli
from skybench.training.photoz import mag_colour_step, train_catalogue

NAME = "photoz-knn"


def fit(params: dict, names: list[str], x: np.ndarray, z: np.ndarray) -> Pipeline:
    model = Pipeline([("magcol", mag_colour_step(names)), ("scale", StandardScaler()),
                      ("knn", KNeighborsRegressor(int(params["n_neighbors"]), weights=params["weights"]))])
    return model.fit(x.astype(np.float64), z)


def train(argv: list[str] | None = None) -> tuple[Any, Path]:
    return train_catalogue(NAME, __doc__, fit, lambda p: (
        f"k-NN regression (k={p['n_neighbors']}, {p['weights']} weights) on the standardised ugriz magnitudes and "
        "4 colours; point estimate; skops"), argv, prepare=_cap_k)


def _cap_k(params: dict, n_train: int) -> None:
    params["n_neighbors"] = min(int(params["n_neighbors"]), n_train)


if __name__ == "__main__":
    run_cli(train)
