"""k-NN baseline: scikit-learn k-nearest neighbours on a PCA of arcsinh-stretched pixels, exported with skops.

    python baselines/lens/knn/train.py --track lens-space --release releases/lens-space \
        --out baselines/lens/knn/lens-space [--max-train N]
        [--also releases/lens-space-realsrc[:WEIGHT] --name NAME]   # a mixture (training/mixture.py)

One scikit-learn Pipeline, fed the flattened (N, bands*101*101) cut-outs as the runner gives them:

    stretch      the central ``crop`` x ``crop`` pixels of each band (FunctionTransformer(numpy.take)), divided
                 by the band's noise sigma (1.4826 MAD of the training set's border pixels; a StandardScaler
                 whose scale_ is that sigma), then numpy.arcsinh: compresses the bright lens cores, keeps
                 faint arcs linear (``skybench.training.sklearn_stretch``)
    pca          PCA to ``n_components`` (randomised SVD, seeded)
    knn          KNeighborsClassifier(``n_neighbors``); the score is the fraction of lenses among the neighbours

Only sklearn types and numpy functions: the skops file loads under the runner's allow-list. No epochs: the curves
logged to MLflow are one point (train and val loss / AUROC).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.decomposition import PCA
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline

from skybench.training import (
    CurveLogger,
    binary_metrics,
    fresh_folder,
    load_training,
    mixture_note,
    noise_sigma,
    run_cli,
    save_skops,
    sklearn_stretch,
    start,
    write_submission,
)

NAME = "knn"


def fit(params: dict, sigma: np.ndarray, x: np.ndarray, y: np.ndarray) -> Pipeline:
    """The fitted Pipeline (the stretch is fixed by sigma; PCA and k-NN are fitted on its output)."""
    stretch = sklearn_stretch(sigma, x.shape[-1], params["crop"])
    f = stretch.transform(x.reshape(len(x), -1))
    pca = PCA(int(params["n_components"]), svd_solver="randomized", random_state=int(params["seed"])).fit(f)
    knn = KNeighborsClassifier(int(params["n_neighbors"])).fit(pca.transform(f), y)
    return Pipeline([("stretch", stretch), ("pca", pca), ("knn", knn)])


def train(argv: list[str] | None = None) -> tuple[Any, Path]:
    """Train from the command line ``argv``; return (the trained in-framework model, the submission folder)."""
    args, params = start(NAME, __doc__, argv, mixture=True)
    x, y = load_training(args, params, "train")
    xv, yv = load_training(args, params, "val")
    sigma = noise_sigma(x)
    params["n_neighbors"] = min(int(params["n_neighbors"]), len(x))
    params["n_components"] = min(int(params["n_components"]), len(x))
    out = fresh_folder(args.out)
    with CurveLogger(args.name, args.track, {**params, "sigma": sigma.tolist()}, enabled=not args.no_mlflow) as log:
        model = fit(params, sigma, x, y)
        train = binary_metrics(y, model.predict_proba(x.reshape(len(x), -1))[:, 1])
        val = binary_metrics(yv, model.predict_proba(xv.reshape(len(xv), -1))[:, 1])
        log.epoch(1, loss=train["loss"], auroc=train["auroc"], val_loss=val["loss"], val_auroc=val["auroc"])
        save_skops(model, out / "model.skops")
        log.summary(val_auroc=val["auroc"], val_loss=val["loss"])
    write_submission(out, args.name, args.track, "sklearn", "model.skops",
                     f"k-NN (k={params['n_neighbors']}) on {params['n_components']} PCA components of the "
                     f"noise-normalised, arcsinh-stretched central {params['crop']} px; skops"
                     + mixture_note(args))
    print(f"wrote {out} (val AUROC {val['auroc']:.4f})")
    return model, out


if __name__ == "__main__":
    run_cli(train)
