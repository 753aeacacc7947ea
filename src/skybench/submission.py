"""Submissions: a folder with ``submission.yaml`` and a model, validated here and run in the sandbox.

    submissions/<team>/<name>/
        submission.yaml     team, name, track, format, model (+ optional description, contact)
        model.onnx          or .keras / .pt2 (torch.export) / .skops / predict.py / predictions .csv

``sandboxed_predict`` runs ``python -m skybench.runner`` under bubblewrap with only the submission folder
(at /submission) and the release's ``public/test`` folder (at /inputs) bound read-only, then validates
what came back in the parent. The ``predictions`` format runs no code: its CSV (``id,score``) is checked
against the release's ``index.parquet`` here.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from .release import sha256_file
from .sandbox import Limits, run_sandboxed
from .tracks import Output, Track, list_tracks

FORMATS = ("onnx", "keras", "torch", "sklearn", "python", "predictions")
MODEL_SUFFIX = {"onnx": ".onnx", "keras": ".keras", "torch": ".pt2", "sklearn": ".skops", "python": ".py",
                "predictions": ".csv"}
SPEC_FILE = "submission.yaml"
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


class SubmissionError(ValueError):
    """A submission folder is invalid; the message names the file and the key."""


class SubmissionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    team: str
    name: str
    track: str
    format: Literal["onnx", "keras", "torch", "sklearn", "python", "predictions"]
    model: str
    description: str | None = None
    contact: str | None = None


@dataclass(frozen=True)
class Submission:
    folder: Path
    spec: SubmissionSpec
    sha256: str  # over sorted (relative path, file sha256) of every file in the folder

    @property
    def model_path(self) -> Path:
        return self.folder / self.spec.model


@dataclass
class PredictResult:
    ok: bool
    reason: str  # "" when ok, else one line
    predictions: np.ndarray | None  # float32 (N,) in the order of ``ids``; None when not ok
    ids: np.ndarray  # ids of the inputs (index.parquet order), first ``limit`` when limited
    device: str  # "cuda", "cpu", "none" (predictions format) or "unknown"
    seconds: float  # wall time of the sandboxed run (0 for the predictions format)
    log: str = ""  # tail of the runner's stderr
    extra: PredictResult | None = None  # predictions on ``extra_inputs``, from the same sandboxed run
    infrastructure: bool = False  # failed for a reason of the evaluating machine, not of the submission


def folder_sha256(folder: Path) -> str:
    """sha256 over the sorted (relative path, sha256) of every file; symlinks count by their target."""
    h = hashlib.sha256()
    folder = Path(folder)
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink():
            h.update(f"{rel}\0symlink:{os.readlink(path)}\n".encode())
        elif path.is_file():
            h.update(f"{rel}\0{sha256_file(path)}\n".encode())
    return h.hexdigest()


def _describe_error(err: dict) -> tuple[str, str]:
    """(key, message) for one pydantic error, in words a participant understands."""
    key = ".".join(str(p) for p in err["loc"]) or "(top level)"
    kind, value = err["type"], err.get("input")
    if kind == "extra_forbidden":
        return key, f"unknown key (allowed: {', '.join(SubmissionSpec.model_fields)})"
    if kind == "missing":
        return key, "missing required key"
    if kind == "literal_error":
        return key, f"must be one of {', '.join(FORMATS)}, got {value!r}"
    if kind.endswith("_type"):
        return key, f"expected {kind.removesuffix('_type')}, got {type(value).__name__} {value!r}"
    return key, err["msg"]


def load_submission(folder: str | Path) -> Submission:
    """Read and validate ``folder/submission.yaml``; raise ``SubmissionError`` naming file and key."""
    folder = Path(folder)
    path = folder / SPEC_FILE
    if not path.is_file():
        raise SubmissionError(f"{path}: missing (every submission folder needs a {SPEC_FILE})")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SubmissionError(f"{path}: YAML syntax error{where}: {problem}") from exc
    if not isinstance(raw, dict):
        raise SubmissionError(f"{path}: expected a mapping of keys ({', '.join(SubmissionSpec.model_fields)}),"
                              f" got {type(raw).__name__}")
    try:
        spec = SubmissionSpec.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{path}: key '{k}': {m}" for k, m in map(_describe_error, exc.errors())]
        raise SubmissionError("\n".join(lines)) from exc

    if spec.track not in list_tracks():
        raise SubmissionError(f"{path}: key 'track': unknown track {spec.track!r} "
                              f"(known: {', '.join(list_tracks())})")
    model = Path(spec.model)
    if model.is_absolute():
        raise SubmissionError(f"{path}: key 'model': {spec.model!r} must be relative to the submission folder")
    root = folder.resolve()
    target = (root / model).resolve()
    if not target.is_relative_to(root) or target == root:
        raise SubmissionError(f"{path}: key 'model': {spec.model!r} escapes the submission folder")
    if not target.is_file():
        raise SubmissionError(f"{path}: key 'model': file {spec.model!r} not found in {folder}")
    suffix = MODEL_SUFFIX[spec.format]
    if target.suffix != suffix:
        raise SubmissionError(f"{path}: key 'model': format {spec.format!r} needs a {suffix} file, "
                              f"got {spec.model!r}")
    return Submission(folder=folder, spec=spec, sha256=folder_sha256(folder))


def _test_folder(inputs: Path) -> Path:
    """``public/test`` of a release root, or ``inputs`` itself when it already is such a folder."""
    inputs = Path(inputs).resolve()
    folder = inputs / "public" / "test" if (inputs / "public" / "test").is_dir() else inputs
    if "hidden" in folder.parts or not (folder / "index.parquet").is_file():
        raise FileNotFoundError(f"{inputs}: not a release nor its public/test folder (no index.parquet)")
    return folder


def _not_world_readable(folder: Path) -> Path | None:
    """First path the sandbox's unprivileged uid could not read (it runs as one when we are root)."""
    for path in [folder, *folder.rglob("*")]:
        mode = path.lstat().st_mode
        need = stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(mode) else 0)
        if not stat.S_ISLNK(mode) and mode & need != need:
            return path
    return None


@functools.cache
def cuda_available() -> bool:
    if not any(Path("/dev").glob("nvidia[0-9]*")):  # no NVIDIA device node: skip importing torch (seconds)
        return False
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # no torch, or a broken CUDA install: run on the CPU
        return False


def _fail(reason: str, ids: np.ndarray, device: str = "unknown", seconds: float = 0.0,
          log: str = "", infrastructure: bool = False) -> PredictResult:
    return PredictResult(False, reason, None, ids, device, seconds, log, infrastructure=infrastructure)


def expected_shapes(output: Output, n: int, input_shape: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    """The prediction shapes a track accepts for ``n`` inputs (``input_shape``: one input image)."""
    if output.kind == "image":
        return [(n, *input_shape)]
    shapes = [(n,)]
    if output.kind == "pdf" and output.grid is not None:
        shapes.append((n, int(output.grid[2])))
    return shapes


def validate_predictions(pred: np.ndarray, n: int, output: Output, input_shape: tuple[int, ...] = ()) -> str:
    """One-line reason why ``pred`` is not a valid output for ``n`` inputs ("" when it is)."""
    if pred.dtype.kind not in "iuf":
        return f"returned non-numeric values (dtype {pred.dtype})"
    shapes = expected_shapes(output, n, input_shape)
    if pred.ndim == 1 and (n,) in shapes and len(pred) != n:
        return f"returned {len(pred)} predictions, expected {n} (one per input)"
    if tuple(pred.shape) not in shapes:
        want = " or ".join(str(s) for s in shapes)
        return f"returned shape {tuple(pred.shape)}, expected {want} for a {output.kind!r} track"
    bad = int(np.size(pred) - np.count_nonzero(np.isfinite(np.asarray(pred, dtype=np.float32))))
    if bad:  # counted in float32, the dtype we keep: 1e300 is inf there
        return f"returned {bad} non-finite value{'s' if bad != 1 else ''} (NaN/inf)"
    if output.kind == "pdf" and pred.ndim == 2:
        from .metrics import validate_pdf  # non-negative bin probabilities, rows summing to 1 within 1e-3

        try:
            validate_pdf(pred, pred.shape[1])
        except ValueError as exc:
            return f"returned an invalid PDF: {exc}"
    return ""


def read_predictions_csv(path: Path, ids: np.ndarray) -> tuple[np.ndarray | None, str]:
    """Scores from an ``id,score`` CSV in the order of ``ids``, or (None, reason)."""
    name = path.name
    try:
        df = pd.read_csv(path, dtype={"id": str})
    except Exception as exc:
        return None, f"{name}: not a readable CSV: {str(exc).strip().splitlines()[-1]}"
    if sorted(df.columns) != ["id", "score"]:
        return None, f"{name}: expected the columns id,score, got {','.join(map(str, df.columns))}"

    def some(values: list) -> str:
        return ", ".join(map(repr, values[:3])) + (", ..." if len(values) > 3 else "")

    want = pd.Index(ids.astype(str))
    got = df["id"].fillna("").str.strip()
    dup = got[got.duplicated()].unique().tolist()
    missing = want.difference(got).tolist()
    extra = pd.Index(got).difference(want).tolist()
    problems = [f"{len(missing)} missing ids ({some(missing)})" if missing else "",
                f"{len(extra)} unknown ids ({some(extra)})" if extra else "",
                f"{len(dup)} duplicated ids ({some(dup)})" if dup else ""]
    if any(problems):
        return None, f"{name}: " + "; ".join(p for p in problems if p)
    scores = pd.to_numeric(df["score"], errors="coerce")
    bad_rows = got[scores.isna() & df["score"].notna()].tolist()
    if bad_rows:
        return None, f"{name}: non-numeric score for {len(bad_rows)} ids ({some(bad_rows)})"
    out = pd.Series(scores.to_numpy(np.float64), index=got).reindex(want).to_numpy(np.float32)
    bad = int(np.size(out) - np.count_nonzero(np.isfinite(out)))
    if bad:
        return None, f"{name}: {bad} non-finite score{'s' if bad != 1 else ''} (NaN/inf/empty)"
    return out, ""


def sandboxed_predict(sub: Submission, inputs: Path, *, scratch: Path, track: Track, limit: int | None = None,
                      gpu: bool | None = None, extra_inputs: Path | None = None,
                      threads: int | None = None) -> PredictResult:
    """Predict the test set of the release ``inputs`` (its root or its ``public/test`` folder).

    Code runs in the sandbox with the track's limits, seeing only the submission and the public test
    images; the parent then checks count, shape and finiteness. ``gpu=None``: use CUDA when available.
    ``extra_inputs``: a second input set (e.g. real lenses) predicted by the same run, returned as ``.extra``
    (not for the ``predictions`` format, whose CSV covers the public test set only). ``threads``: CPU threads
    of the model (default min(4, cores)); an executor running several sandboxes at once gives each fewer."""
    test_dir = _test_folder(inputs)
    extra_dir = _test_folder(extra_inputs) if extra_inputs is not None else None
    all_ids = pd.read_parquet(test_dir / "index.parquet")["id"].to_numpy()
    n = len(all_ids) if limit is None else min(limit, len(all_ids))
    ids = all_ids[:n]
    if sub.spec.format == "predictions":
        pred, reason = read_predictions_csv(sub.model_path, all_ids)
        if pred is None:
            return _fail(reason, ids, device="none")
        return PredictResult(True, "", pred[:n], ids, "none", 0.0)

    if os.geteuid() == 0:  # the sandboxed command runs as an unprivileged uid
        for folder in (sub.folder, test_dir):
            if bad := _not_world_readable(folder.resolve()):
                return _fail(f"{bad} is not world-readable; the sandbox cannot read it (chmod -R a+rX)", ids)
    gpu = cuda_available() if gpu is None else gpu
    scratch = Path(scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    out, info, extra_out = scratch / "predictions.npy", scratch / "runner.json", scratch / "extra.npy"
    for stale in (out, info, extra_out):
        stale.unlink(missing_ok=True)

    n_threads = str(threads or min(4, os.cpu_count() or 1))
    env = dict.fromkeys(_THREAD_VARS, n_threads) | {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONNOUSERSITE": "1"}
    if not gpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    elif "CUDA_VISIBLE_DEVICES" in os.environ:  # e.g. the GPU a Ray task was given: the sandbox sees only it
        env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
    argv = [sys.executable, "-m", "skybench.runner", "--submission", "/submission", "--inputs", "/inputs",
            "--out", "/scratch/predictions.npy", "--batch-size", str(track.evaluation.batch_size),
            "--device", "auto" if gpu else "cpu"]
    binds = [(sub.folder, "/submission"), (test_dir, "/inputs")]
    if extra_dir is not None:
        argv[argv.index("/inputs") + 1:argv.index("/inputs") + 1] = ["/extra"]
        argv[argv.index("/scratch/predictions.npy") + 1:argv.index("/scratch/predictions.npy") + 1] = \
            ["/scratch/extra.npy"]
        binds.append((extra_dir, "/extra"))
    if limit is not None:
        argv += ["--limit", str(n)]
    box = track.sandbox
    limits = Limits(memory_mb=box.memory_mb, cpu_seconds=box.cpu_seconds, wall_seconds=box.wall_seconds,
                    max_processes=box.max_processes)
    res = run_sandboxed(argv, scratch=scratch, ro_binds=binds, limits=limits, env=env, gpu=gpu)
    device = "unknown"
    try:
        if info.is_file() and not info.is_symlink() and info.stat().st_size < 10_000:
            device = json.loads(info.read_text()).get("device")
            device = device if device in ("cpu", "cuda") else "unknown"
    except (ValueError, AttributeError, OSError):
        pass
    if not res.ok:
        return _fail(res.reason, ids, device, res.wall_seconds, res.stderr,
                     infrastructure=bool(getattr(res, "infrastructure", False)))
    result = _read_output(out, ids, n, track, device, res.wall_seconds, res.stderr)
    if result.ok and extra_dir is not None:
        extra_ids = pd.read_parquet(extra_dir / "index.parquet")["id"].to_numpy()[:limit]  # --limit covers both
        result.extra = _read_output(extra_out, extra_ids, len(extra_ids), track, device, 0.0, "")
    return result


def _read_output(out: Path, ids: np.ndarray, n: int, track: Track, device: str, seconds: float,
                 log: str) -> PredictResult:
    """Load and check one predictions file written by the sandboxed runner."""
    if out.is_symlink() or not out.is_file():
        return _fail("produced no predictions file", ids, device, seconds, log)
    try:  # memory-mapped: a huge file is rejected on its header, before anything is read
        pred = np.load(out, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        return _fail(f"predictions file is not a readable .npy array: {exc}", ids, device, seconds)
    if reason := validate_predictions(pred, n, track.output, _input_shape(track)):
        return _fail(reason, ids, device, seconds, log)
    return PredictResult(True, "", np.array(pred, dtype=np.float32), ids, device, seconds, log)


def _input_shape(track: Track) -> tuple[int, ...]:
    """Shape of one input image of the track (what an ``image`` output must match)."""
    if track.cutout is None:
        return ()
    return (len(track.band_names), track.cutout.size, track.cutout.size)
