"""Photo-z MLP baseline: a scikit-learn multi-layer perceptron regressor on magnitudes and colours, exported with
skops.

    python baselines/photoz/photoz-mlp/train.py --track photoz-catalog --release releases/photoz-catalog \
        --out baselines/photoz/photoz-mlp/photoz-catalog

One Pipeline on the track's catalogue features (names from the release manifest):

    magcol   FunctionTransformer(numpy.dot): the five magnitudes u..z and the four colours u-g, g-r, r-i, i-z
    scale    StandardScaler
    mlp      MLPRegressor(``hidden``, ReLU, Adam, L2 ``alpha``, early stopping on 10% of the fit data):
             z_phot (a point estimate, shape (N,))

The model is fitted on train, scored on val (logged to MLflow), then refitted on train + val (``refit_on_val``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from skybench.training import run_cli
from skybench.training.photoz import mag_colour_step, train_catalogue

NAME = "photoz-mlp"


def fit(params: dict, names: list[str], x: np.ndarray, z: np.ndarray) -> Pipeline:
    model = Pipeline([("magcol", mag_colour_step(names)), ("scale", StandardScaler()),
                      ("mlp", MLPRegressor(hidden_layer_sizes=tuple(params["hidden"]), alpha=float(params["alpha"]),
                                           learning_rate_init=float(params["lr"]), max_iter=int(params["epochs"]),
                                           early_stopping=True, n_iter_no_change=20,
                                           random_state=int(params["seed"])))])
    with threadpool_limits(1):  # small matrices: BLAS threads only contend (6x slower on a busy 2-core machine)
        return model.fit(x.astype(np.float64), z)


def train(argv: list[str] | None = None) -> tuple[Any, Path]:
    return train_catalogue(NAME, __doc__, fit, lambda p: (
        f"MLP regression (hidden {p['hidden']}) on the standardised ugriz magnitudes and 4 colours; "
        "point estimate; skops"), argv)


if __name__ == "__main__":
    run_cli(train)
