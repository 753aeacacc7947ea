"""Photo-z linear baseline: scikit-learn ordinary least squares on magnitudes and colours, exported with skops.

    python baselines/photoz/photoz-linear/train.py --track photoz-catalog --release releases/photoz-catalog \
        --out baselines/photoz/photoz-linear/photoz-catalog

One Pipeline on the track's catalogue features (names from the release manifest):

    magcol   FunctionTransformer(numpy.dot): the five magnitudes u..z and the four colours u-g, g-r, r-i, i-z
    scale    StandardScaler
    linear   LinearRegression: z_phot (a point estimate, shape (N,))

The model is fitted on train, scored on val (logged to MLflow), then refitted on train + val (``refit_on_val``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from skybench.training import run_cli
from skybench.training.photoz import mag_colour_step, train_catalogue

NAME = "photoz-linear"


def fit(params: dict, names: list[str], x: np.ndarray, z: np.ndarray) -> Pipeline:
    model = Pipeline([("magcol", mag_colour_step(names)), ("scale", StandardScaler()),
                      ("linear", LinearRegression())])
    return model.fit(x.astype(np.float64), z)


def train(argv: list[str] | None = None) -> tuple[Any, Path]:
    return train_catalogue(NAME, __doc__, fit, lambda p: (
        "linear regression on the standardised ugriz magnitudes and 4 colours; point estimate; skops"), argv)


if __name__ == "__main__":
    run_cli(train)
