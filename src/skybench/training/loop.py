"""The training loop pieces the baselines share: keep the best epoch, Keras epoch callbacks, batched prediction,
and the dihedral augmentation (flips and 90-degree rotations) of numpy arrays and torch tensors.

Framework imports are lazy: importing this module needs neither torch nor Keras."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


class KeepBest:
    """The epoch with the best value of the validation metric ``key``, its metrics and a snapshot of the model.

    ``mode`` ``max`` or ``min``; with ``nan_is_best`` a NaN value (e.g. AUROC when val has one class) counts as
    an improvement. ``enabled=False`` never keeps anything (the last epoch is exported)."""

    def __init__(self, key: str, mode: str = "max", *, nan_is_best: bool = False, enabled: bool = True) -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be max or min, got {mode!r}")
        self.key, self.mode, self.nan_is_best, self.enabled = key, mode, nan_is_best, enabled
        self.epoch = 0
        self.metrics: dict[str, float] = {key: -math.inf if mode == "max" else math.inf}
        self.state: Any = None

    @property
    def value(self) -> float:
        return self.metrics[self.key]

    def better(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.value
        return not value <= self.value if self.nan_is_best else value > self.value

    def update(self, epoch: int, metrics: dict[str, float], snapshot: Callable[[], Any]) -> bool:
        """Keep ``epoch`` (and ``snapshot()``) when its ``metrics[key]`` is better than the best so far."""
        if not self.enabled or not self.better(metrics[self.key]):
            return False
        self.epoch, self.metrics, self.state = epoch, metrics, snapshot()
        return True


def keras_epoch_callback(validate: Callable[[Any, int, dict], dict[str, float]], keep: KeepBest,
                         label: str) -> Any:
    """A Keras callback: ``validate(model, epoch, logs)`` (1-based epoch; computes and logs the validation
    metrics) after every epoch, ``keep`` updated with the weights; at the end of training the kept weights are
    restored (when there are any). ``.last`` holds the metrics of the exported epoch."""
    import keras

    class EpochEnd(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.keep = keep
            self.last: dict[str, float] = {}

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            self.last = validate(self.model, epoch + 1, logs or {})
            keep.update(epoch + 1, self.last, self.model.get_weights)

        def on_train_end(self, logs: dict | None = None) -> None:
            if keep.enabled and keep.state is not None:
                self.model.set_weights(keep.state)
                self.last = keep.metrics
                print(f"kept epoch {keep.epoch} (best val {label})")

    return EpochEnd()


def predict_batches(predict: Callable[..., Any], arrays: Sequence[np.ndarray], batch_size: int) -> np.ndarray:
    """``predict(*batch)`` over consecutive batches of the ``arrays`` (same length), concatenated as numpy."""
    n = len(arrays[0])
    out = [np.asarray(predict(*(a[i:i + batch_size] for a in arrays))) for i in range(0, n, batch_size)]
    return np.concatenate(out) if out else np.empty(0, np.float32)


def dihedral_numpy(arrays: Sequence[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Copies of the (N, C, H, W) ``arrays`` with the same random horizontal flip and k*90-degree rotation of
    each object in every array (the 8 symmetries of the square)."""
    n = len(arrays[0])
    flip, k = rng.random(n) < 0.5, rng.integers(0, 4, n)
    out = [a.copy() for a in arrays]
    for i in range(n):
        for a, o in zip(arrays, out, strict=True):
            o[i] = np.rot90(a[i, :, :, ::-1] if flip[i] else a[i], k[i], axes=(1, 2))
    return out


def dihedral_torch(tensors: Sequence[Any], gen: Any) -> list[Any]:
    """The torch version of :func:`dihedral_numpy` (``gen`` a ``torch.Generator``; the draws: flips, then k)."""
    import torch

    n = len(tensors[0])
    flip = torch.rand(n, generator=gen) < 0.5
    k = torch.randint(0, 4, (n,), generator=gen)
    out = []
    for x in tensors:
        x = torch.where(flip.view(-1, 1, 1, 1).to(x.device), x.flip(-1), x)
        y = x.clone()
        for r in (1, 2, 3):
            sel = (k == r).nonzero().squeeze(1).to(x.device)
            if len(sel):
                y[sel] = torch.rot90(x[sel], r, dims=(2, 3))
        out.append(y)
    return out
