"""What the baselines (``baselines/<task>/<name>/train.py``) share, so that each ``train.py`` is its model and its
hyper-parameters only.

Every baseline script does the same few things around its own model:

    args, params = start("knn", __doc__, argv)           # --track --release ...; train.knn of params.yaml; seeds
    x, y = load_split(args.release, "train", args.max_train)  # or load_training(args, params, "train"): mixtures
    sigma = noise_sigma(x)                               # per-band noise, stored inside the exported model
    out = fresh_folder(args.out)
    with CurveLogger("knn", args.track, params) as log:  # MLflow run in skybench-training-<track>
        ... log.epoch(e, loss=..., val_loss=..., val_auroc=...)
        save_skops(model, out / "model.skops")           # byte-identical for the same model (serialise.py)
    write_submission(out, "knn", args.track, "sklearn", "model.skops", "...")

The rest of the package: :mod:`~skybench.training.loop` (keep the best epoch, Keras epoch callbacks, batched
prediction, flip/rotation augmentation), :mod:`~skybench.training.serialise` (skops, Keras and ONNX files that are
the same bytes for the same model), :mod:`~skybench.training.mixture` (training on several releases of one
instrument: ``start(..., mixture=True)`` adds ``--also RELEASE[:WEIGHT]`` and ``--name``; read with
:func:`load_training`; ``skybench compare-training`` compares a baseline before and after, on real data), and per
task :mod:`~skybench.training.photoz` and :mod:`~skybench.training.enhance` (loaders, the degradation from
the manifest, validation metrics).

Parameters live in ``params.yaml`` under ``train.<baseline>``. A value may depend on the pipeline's
``profile``: ``epochs: {demo: 6, challenge: 40}`` is read as 6 under ``profile: demo``; or on the track:
``crop: {lens-space: 64, lens-ground: 48}`` (nested either way round). Only the public
``train`` and ``val`` splits of a release are read here; the hidden test labels never are.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from skybench.common import robust_sigma
from skybench.tracks import list_tracks, project_root
from skybench.training.loop import (
    KeepBest,
    dihedral_numpy,
    dihedral_torch,
    keras_epoch_callback,
    predict_batches,
)
from skybench.training.serialise import export_onnx, save_keras, save_skops

__all__ = [
    "CurveLogger",
    "KeepBest",
    "baseline_params",
    "binary_metrics",
    "dihedral_numpy",
    "dihedral_torch",
    "export_onnx",
    "fresh_folder",
    "keras_epoch_callback",
    "load_split",
    "load_training",
    "mixture_note",
    "noise_sigma",
    "parse_args",
    "predict_batches",
    "save_keras",
    "save_skops",
    "seed_everything",
    "set_threads",
    "sklearn_stretch",
    "start",
    "write_submission",
]

PROFILES = ("demo", "challenge")
TEAM = "baselines"


def parse_args(description: str, argv: list[str] | None = None, *, mixture: bool = False) -> argparse.Namespace:
    """The command line shared by every baseline's ``train.py``; ``mixture``: with ``--also`` and ``--name`` (the
    baselines that read their data with :func:`load_training`)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--track", required=True, help="track name, e.g. lens-space")
    p.add_argument("--release", type=Path, required=True, help="release root (only public train and val are read)")
    p.add_argument("--out", type=Path, required=True, help="submission folder to write")
    p.add_argument("--max-train", type=int, default=None, help="use only the first N training cut-outs")
    p.add_argument("--epochs", type=int, default=None, help="override the number of epochs")
    p.add_argument("--params", type=Path, default=None, help="parameters file (default: <project>/params.yaml)")
    p.add_argument("--profile", default=None, help="override the profile of the parameters file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=YAML",
                   help="override one parameter of this baseline, e.g. --set widths=[8,16] (repeatable)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log training curves")
    if mixture:
        p.add_argument("--also", action="append", default=[], metavar="RELEASE[:WEIGHT]",
                       help="also train on this release's public train/val (same instrument; repeatable); WEIGHT: "
                            "copies of it, a fraction takes a seeded subset (default 1)")
        p.add_argument("--name", default=None, help="the submission's name (default: the baseline's)")
    return p.parse_args(argv)


def _resolve(value: Any, profile: str, track: str | None) -> Any:
    """``{demo: a, challenge: b}`` -> the profile's value, ``{lens-space: a, lens-ground: b}`` -> the track's
    (nested either way round); anything else unchanged."""
    if not isinstance(value, Mapping) or not value:
        return value
    keys = set(value)
    if keys <= set(PROFILES):
        choice, kind = profile, "profile"
    elif keys <= set(list_tracks()) and track is not None:
        choice, kind = track, "track"
    else:
        return value
    if choice not in value:
        raise KeyError(f"no value for {kind} {choice!r} in {dict(value)}")
    return _resolve(value[choice], profile, track)


def baseline_params(name: str, args: argparse.Namespace | None = None, *, params_file: Path | None = None,
                    profile: str | None = None, track: str | None = None,
                    overrides: list[str] | None = None) -> dict[str, Any]:
    """``train.<name>`` of the parameters file, resolved for the profile and track, with overrides; its
    ``cpu_threads`` defaults to the file's top-level one.

    ``--epochs`` (when given) replaces ``epochs``; ``--set k=v`` replaces ``k`` (``v`` parsed as YAML)."""
    params_file = params_file or (args.params if args is not None else None) or project_root() / "params.yaml"
    raw = yaml.safe_load(Path(params_file).read_text()) or {}
    profile = profile or (args.profile if args is not None else None) or raw.get("profile", "demo")
    section = (raw.get("train") or {}).get(name)
    if section is None:
        raise KeyError(f"{params_file}: no parameters under train.{name}")
    track = track or (args.track if args is not None else None)
    params = {k: _resolve(v, profile, track) for k, v in section.items()}
    params.setdefault("cpu_threads", _resolve(raw.get("cpu_threads"), profile, track))
    for item in (overrides or []) + (list(args.overrides) if args is not None else []):
        key, sep, value = item.partition("=")
        if not sep or key not in params:
            raise KeyError(f"--set {item!r}: expected KEY=VALUE with KEY one of {sorted(params)}")
        params[key] = yaml.safe_load(value)
    if args is not None and args.epochs is not None:
        params["epochs"] = args.epochs
    params["profile"] = profile
    return params


def set_threads(n: int | None) -> None:
    """Use ``n`` CPU threads in BLAS / OpenMP, and in torch / TensorFlow when the script imported them (None or 0:
    the defaults).

    On a shared CPU one thread per process is much faster than contended ones. TensorFlow fixes its thread pools
    when it starts: in a process where it already ran (the tests), its threads are kept."""
    if not n:
        return
    from threadpoolctl import threadpool_limits

    threadpool_limits(int(n))  # numpy / scikit-learn's BLAS and OpenMP pools, for the rest of the process
    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(int(n))
    if "tensorflow" in sys.modules:
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(int(n))
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # TensorFlow already started in this process
            pass


def seed_everything(seed: int) -> None:
    """Seed python, numpy, and torch / TensorFlow when the script imported them; ask for deterministic ops."""
    random.seed(seed)
    np.random.seed(seed)
    if "torch" in sys.modules:
        import torch

        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS on a GPU
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    if "tensorflow" in sys.modules or "keras" in sys.modules:
        import keras
        import tensorflow as tf

        keras.utils.set_random_seed(seed)
        tf.config.experimental.enable_op_determinism()


def start(name: str, doc: str | None, argv: list[str] | None = None, *, seed: bool = True,
          mixture: bool = False) -> tuple[argparse.Namespace, dict[str, Any]]:
    """The beginning of every baseline's training: (the command line ``argv``, ``train.<name>`` of the parameters
    resolved for it), with the CPU threads (``cpu_threads``) set and everything seeded (``seed``).

    ``mixture``: the baseline reads its data with :func:`load_training`, so it takes ``--also`` (parsed into
    ``args.also``: :class:`~skybench.training.mixture.MixPart` s, also in ``params["also"]``, for the logs) and
    ``--name`` (``args.name``, the baseline's name by default)."""
    args = parse_args((doc or name).splitlines()[0], argv, mixture=mixture)
    params = baseline_params(name, args)
    if mixture:
        from skybench.training.mixture import parse_part

        args.also = [parse_part(a) for a in args.also]
        args.name = args.name or name
        if args.also:  # only then: a single-release training logs exactly what it always did
            params["also"] = [f"{p.release}:{p.weight:g}" for p in args.also]
    set_threads(params.get("cpu_threads"))
    if seed:
        seed_everything(int(params["seed"]))
    return args, params


def load_split(release: str | Path, split: str, max_n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images float32 (N, bands, H, W), labels int64 (N,)) of a public ``train`` or ``val`` split."""
    if split not in ("train", "val"):
        raise ValueError(f"baselines train on the public train/val splits only, not {split!r}")
    from skybench.release.reader import open_release

    rel = open_release(release)
    images = rel.images(split)
    n = len(images) if max_n is None else min(max_n, len(images))
    x = np.ascontiguousarray(images[:n], dtype=np.float32)
    y = np.asarray(rel.labels(split)[:n]).astype(np.int64)
    return x, y


def load_training(args: argparse.Namespace, params: Mapping[str, Any],
                  split: str) -> tuple[np.ndarray, np.ndarray]:
    """:func:`load_split` of ``args.release`` (``--max-train`` for ``train``), or, with ``--also``, the seeded
    mixture of it and those releases (:func:`skybench.training.mixture.load_mixture`, seed ``params["seed"]``)."""
    max_n = args.max_train if split == "train" else None
    also = getattr(args, "also", None)
    if not also:
        return load_split(args.release, split, max_n)
    from skybench.training.mixture import MixPart, load_mixture

    return load_mixture([MixPart(Path(args.release)), *also], split, max_n, seed=int(params["seed"]))


def mixture_note(args: argparse.Namespace) -> str:
    """For a submission's description: "" for one release, else "; trained on a mixture: <release> + <also>:<w>..."."""
    also = getattr(args, "also", None)
    if not also:
        return ""
    return "; trained on a mixture: " + " + ".join([Path(args.release).name,
                                                    *(f"{Path(p.release).name}:{p.weight:g}" for p in also)])


def noise_sigma(x: np.ndarray, border: int = 8) -> np.ndarray:
    """Per-band noise sigma (float32, (bands,)) as 1.4826 * MAD of the pixels within ``border`` of the edge.

    Cut-outs are centred on the deflector, so the border is mostly sky (a few companions do not move the
    median)."""
    x = np.asarray(x, dtype=np.float32)
    mask = np.ones(x.shape[-2:], bool)
    mask[border:-border, border:-border] = False
    pix = np.moveaxis(x[..., mask], 1, 0).reshape(x.shape[1], -1)  # (bands, N * n_border)
    sigma = robust_sigma(pix, axis=1)
    if not np.all(np.isfinite(sigma) & (sigma > 0)):
        raise ValueError(f"could not estimate the noise level from the border pixels: {sigma}")
    return sigma.astype(np.float32)


def sklearn_stretch(sigma: np.ndarray, size: int, crop: int | None) -> Any:
    """A fitted scikit-learn Pipeline for flattened (N, bands*size*size) cut-outs, as the runner passes them:

    crop   FunctionTransformer(numpy.take): the central ``crop`` x ``crop`` pixels of every band
    noise  StandardScaler(with_mean=False) whose ``scale_`` is the noise sigma of each pixel's band (fitted
           on the two rows +sigma and -sigma, whose standard deviation is sigma)
    asinh  FunctionTransformer(numpy.arcsinh): linear for faint pixels, logarithmic for bright cores

    Only sklearn types and numpy functions: a skops file of it loads with the runner's allow-list."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    sigma = np.asarray(sigma, dtype=np.float64).reshape(-1)
    crop = size if not crop or crop >= size else int(crop)
    a = (size - crop) // 2
    rows = np.arange(a, a + crop)
    pix = (rows[:, None] * size + rows[None, :]).reshape(-1)  # central pixels of one band, row-major
    columns = np.concatenate([b * size * size + pix for b in range(len(sigma))])
    band_sigma = np.repeat(sigma, len(pix))
    steps = [
        ("crop", FunctionTransformer(np.take, kw_args={"indices": columns, "axis": 1})),
        ("noise", StandardScaler(with_mean=False).fit(np.stack([band_sigma, -band_sigma]))),
        ("asinh", FunctionTransformer(np.arcsinh)),
    ]
    pipe = Pipeline(steps)
    pipe.steps[0][1].fit(np.zeros((1, len(sigma) * size * size), np.float32))
    pipe.steps[2][1].fit(np.zeros((1, len(columns)), np.float32))
    return pipe


def binary_metrics(labels: np.ndarray, scores: np.ndarray, eps: float = 1e-7) -> dict[str, float]:
    """Binary cross-entropy and ROC AUC of scores in [0, 1] (AUROC NaN when one class is missing)."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(labels, dtype=np.float64)
    p = np.clip(np.asarray(scores, dtype=np.float64).reshape(-1), eps, 1 - eps)
    loss = float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))
    auc = float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else math.nan
    return {"loss": loss, "auroc": auc}


def _flat(params: Mapping[str, Any]) -> dict[str, str]:
    return {k: str(v)[:500] for k, v in params.items()}


class CurveLogger:
    """One MLflow run per training in ``skybench-training-<track>`` (apart from the leaderboard runs).

    ``epoch(step, **metrics)`` logs one point of each curve; ``summary(**metrics)`` final values. The run ends
    FINISHED, or FAILED when the training raised. ``enabled=False`` (``--no-mlflow``) logs nothing."""

    def __init__(self, baseline: str, track: str, params: Mapping[str, Any], *, enabled: bool = True):
        self.baseline, self.track, self.params, self.enabled = baseline, track, dict(params), enabled
        self.run_id: str | None = None
        self.t0 = time.perf_counter()
        self.history: list[dict[str, float]] = []

    def __enter__(self) -> CurveLogger:
        self.t0 = time.perf_counter()
        if not self.enabled:
            return self
        from mlflow.entities import Param, RunTag

        from skybench.tracking import KIND_TAG, client, ensure_experiment, git_commit, training_experiment

        self._client = client()
        exp_id = ensure_experiment(training_experiment(self.track))
        run = self._client.create_run(exp_id, run_name=f"{TEAM}/{self.baseline}",
                                      tags={KIND_TAG: "training"})
        self.run_id = run.info.run_id
        tags = {"team": TEAM, "baseline": self.baseline, "skybench.track": self.track, "git_commit": git_commit()}
        self._client.log_batch(self.run_id, params=[Param(k, v) for k, v in _flat(self.params).items()],
                               tags=[RunTag(k, v) for k, v in tags.items()])
        return self

    def _log(self, step: int, metrics: Mapping[str, float]) -> None:
        if not self.enabled or self.run_id is None:
            return
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        batch = [Metric(k, float(v), ts, step) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and math.isfinite(v)]
        self._client.log_batch(self.run_id, metrics=batch)

    def epoch(self, step: int, **metrics: float) -> None:
        metrics = {k: float(v) for k, v in metrics.items()}
        self.history.append({"epoch": step, **metrics})
        shown = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        print(f"[{self.baseline} {self.track}] epoch {step}  {shown}  ({time.perf_counter() - self.t0:.0f} s)",
              flush=True)
        self._log(step, metrics)

    def summary(self, **metrics: float) -> None:
        self._log(0, {"final_" + k: v for k, v in metrics.items()})

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        seconds = time.perf_counter() - self.t0
        print(f"[{self.baseline} {self.track}] trained in {seconds:.1f} s", flush=True)
        if not self.enabled or self.run_id is None:
            return
        try:
            self._log(0, {"train_seconds": seconds})
        finally:
            self._client.set_terminated(self.run_id, "FINISHED" if exc_type is None else "FAILED")


def write_submission(out: str | Path, name: str, track: str, fmt: str, model: str, description: str) -> Path:
    """Write ``out/submission.yaml`` (team ``baselines``) and make the folder readable by the sandbox."""
    out = Path(out)
    spec = {"team": TEAM, "name": name, "track": track, "format": fmt, "model": model,
            "description": description}
    (out / "submission.yaml").write_text(yaml.safe_dump(spec, sort_keys=False, width=1000))
    for path in [out, *out.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return out


def fresh_folder(out: str | Path) -> Path:
    """Empty ``out`` (created if missing) so that no stale model file survives into the submission."""
    import shutil

    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    return out


def run_cli(train: Callable[[list[str] | None], object]) -> None:
    """The ``__main__`` of a baseline's train.py: train from the command line and print the wall time; a release
    that cannot be read, or a disk that cannot be written, is one line on stderr and exit status 1."""
    from skybench.release import ReleaseError

    start = time.perf_counter()
    try:
        train(None)
    except (ReleaseError, OSError) as exc:  # an OSError's text names its file
        sys.exit(f"error: {exc}")
    print(f"total {time.perf_counter() - start:.1f} s")
