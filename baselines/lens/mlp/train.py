"""MLP baseline: a scikit-learn multi-layer perceptron on whitened PCA features, exported with skops.

    python baselines/lens/mlp/train.py --track lens-space --release releases/lens-space \
        --out baselines/lens/mlp/lens-space [--max-train N] [--epochs E]
        [--also releases/lens-space-realsrc[:WEIGHT] --name NAME]   # a mixture (training/mixture.py)

The same front end as the k-NN baseline (``skybench.training.sklearn_stretch``: central crop divided by the
per-band noise sigma, arcsinh stretch), then PCA to ``n_components`` whitened components and an MLPClassifier
(ReLU, Adam, L2 ``alpha``) trained one epoch at a time with ``partial_fit`` so that the loss, validation loss
and validation AUROC of every epoch go to MLflow. The PCA is fitted on the training split once; the exported
Pipeline holds stretch, PCA and MLP.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.decomposition import PCA
from sklearn.neural_network import MLPClassifier
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

NAME = "mlp"


def build(params: dict, sigma: np.ndarray, size: int) -> tuple[Pipeline, PCA, MLPClassifier]:
    """(the fixed stretch, the PCA and the MLP to fit on its output)."""
    seed = int(params["seed"])
    stretch = sklearn_stretch(sigma, size, params["crop"])
    pca = PCA(int(params["n_components"]), whiten=True, svd_solver="randomized", random_state=seed)
    mlp = MLPClassifier(tuple(int(h) for h in params["hidden"]), alpha=float(params["alpha"]),
                        learning_rate_init=float(params["lr"]), batch_size=int(params["batch_size"]),
                        shuffle=True, random_state=seed)
    return stretch, pca, mlp


def train(argv: list[str] | None = None) -> tuple[Any, Path]:
    """Train from the command line ``argv``; return (the trained in-framework model, the submission folder)."""
    args, params = start(NAME, __doc__, argv, mixture=True)
    x, y = load_training(args, params, "train")
    xv, yv = load_training(args, params, "val")
    sigma = noise_sigma(x)
    params["n_components"] = min(int(params["n_components"]), len(x))
    stretch, pca, mlp = build(params, sigma, x.shape[-1])
    out = fresh_folder(args.out)
    with CurveLogger(args.name, args.track, {**params, "sigma": sigma.tolist()}, enabled=not args.no_mlflow) as log:
        f = pca.fit_transform(stretch.transform(x.reshape(len(x), -1)))
        fv = pca.transform(stretch.transform(xv.reshape(len(xv), -1)))
        for epoch in range(1, int(params["epochs"]) + 1):
            mlp.partial_fit(f, y, classes=np.array([0, 1]))  # one pass over the training set
            val = binary_metrics(yv, mlp.predict_proba(fv)[:, 1])
            log.epoch(epoch, loss=float(mlp.loss_), val_loss=val["loss"], val_auroc=val["auroc"])
        model = Pipeline([("stretch", stretch), ("pca", pca), ("mlp", mlp)])
        save_skops(model, out / "model.skops")
        log.summary(val_auroc=val["auroc"], val_loss=val["loss"])
    write_submission(out, args.name, args.track, "sklearn", "model.skops",
                     f"MLP {params['hidden']} on {params['n_components']} whitened PCA components of the "
                     f"noise-normalised, arcsinh-stretched central {params['crop']} px; skops"
                     + mixture_note(args))
    print(f"wrote {out} (val AUROC {val['auroc']:.4f})")
    return model, out


if __name__ == "__main__":
    run_cli(train)
