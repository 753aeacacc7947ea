"""Submissions: a folder with ``submission.yaml`` and a model, validated here and run in the sandbox.

    submissions/<team>/<name>/
        submission.yaml     team, name, track, format, model (+ optional description, contact)
        model.onnx          or .keras / .pt2 (torch.export) / .skops / predict.py / predictions .csv

``sandboxed_predict`` runs ``python -m skybench.harness.runner`` under bubblewrap with only the submission folder
(at /submission) and the release's public test folder (at /inputs) bound read-only, then validates
what came back in the parent. The ``predictions`` format runs no code: its CSV (``id,score``) is checked
against the release's test ids here; on a ``maps`` track it is a ``.npy`` of one output per test id, in the order
of the public test index, read and checked like a runner's output.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import reprlib
import stat
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints, ValidationError
from pydantic_core import ErrorDetails

from skybench.common import SLUG
from skybench.escape import escape
from skybench.harness.files import SUBMISSION_LIMITS, FolderError, WalkLimits, open_regular, read_regular, walk
from skybench.harness.sandbox import THREAD_VARS, Limits, run_sandboxed
from skybench.release import layout, read_manifest, sha256_file
from skybench.release.shards import shards
from skybench.tracks import Output, Track, list_tracks, project_root

FORMATS = ("onnx", "keras", "torch", "sklearn", "python", "predictions")
MODEL_SUFFIX = {"onnx": ".onnx", "keras": ".keras", "torch": ".pt2", "sklearn": ".skops", "python": ".py",
                "predictions": ".csv"}
SPEC_FILE = "submission.yaml"
NPY_PREDICTIONS = ".npy"  # a file of maps: recognised on a maps track to refuse it (skybench.tasks.generate.fresh)

SPEC_MAX_BYTES = 64 * 1024  # submission.yaml
CSV_MAX_BYTES = 64 * 1024**2  # a predictions-format CSV
SPEC_MAX_DEPTH = 8  # nesting of submission.yaml (the spec itself is one flat mapping)
MAX_MESSAGE = 300  # characters of one error line

RESERVED_TEAMS = ("examples", "baselines", "invalid")  # identities the project itself files records under


def reserved_team(team: str) -> bool:
    """Whether ``team`` is, or looks like (any case), one of :data:`RESERVED_TEAMS`."""
    return team.casefold() in RESERVED_TEAMS


class SubmissionError(ValueError):
    """A submission folder is invalid; the message names the file and the key."""


def clip(text: str, n: int = MAX_MESSAGE) -> str:
    """``text`` on one line, at most ``n`` characters, non-printable characters escaped."""
    text = " ".join(str(text)[:8 * n].split())  # sliced first: a huge message costs nothing
    text = escape(text[:4 * n])
    return text if len(text) <= n else text[:n - 3] + "..."


_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother, _REPR.maxlevel = 60, 60, 2
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 4


def show(value: object) -> str:
    """A bounded repr of a team-supplied value, for error messages (never the whole of a huge value)."""
    return clip(_REPR.repr(value), 80)


def _no_dots(value: str) -> str:
    if ".." in value:
        raise ValueError("must not contain '..'")
    return value


def _printable(keep: str = "") -> AfterValidator:
    def check(value: str) -> str:
        bad = next((c for c in value if not c.isprintable() and c not in keep), None)
        if bad is not None:
            raise ValueError(f"contains the control character {bad!r} at position {value.index(bad)}")
        return value

    return AfterValidator(check)


Slug = Annotated[str, StringConstraints(pattern=SLUG), AfterValidator(_no_dots)]


class SubmissionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    team: Slug
    name: Slug
    track: Slug
    format: Literal["onnx", "keras", "torch", "sklearn", "python", "predictions"]
    model: Annotated[str, StringConstraints(min_length=1, max_length=255), _printable()]
    description: Annotated[str, StringConstraints(max_length=2000), _printable("\n\t")] | None = None
    contact: Annotated[str, StringConstraints(max_length=200), _printable()] | None = None


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
    ids: np.ndarray  # ids of the inputs (in the input folder's order), first ``limit`` when limited
    device: str  # "cuda", "cpu", "none" (predictions format) or "unknown"
    seconds: float  # wall time of the sandboxed run (0 for the predictions format)
    log: str = ""  # tail of the runner's stderr
    extra: PredictResult | None = None  # the real set's part of a mixed stream (``mixing.Stream.split``)
    infrastructure: bool = False  # failed for a reason of the evaluating machine, not of the submission: retry


# A nested .dvcignore is read and compiled (patterns as regexes matched against every path below it) by `dvc status`
# and `dvc repro`, whose evaluate stages depend on submissions/: "*a*a*a*a*a*a*b" and a file of 200 a's hold DVC for
# hours before any sandbox starts.
DVC_FILES = (".dvcignore",)


def folder_sha256(folder: Path) -> str:
    """sha256 over the sorted (relative path, sha256) of every file; symlinks count by the sha256 of their target
    (a fixed-length record: a target is any bytes but NUL, "\n" included, so written as it is one folder's symlink
    could spell another folder's symlink and next file, and two folders would share a hash).

    Walks within :data:`skybench.harness.files.SUBMISSION_LIMITS`; a folder beyond them, or holding a FIFO, socket
    or device, raises ``SubmissionError``."""
    h = hashlib.sha256()
    folder = Path(folder)
    try:
        entries = walk(folder, SUBMISSION_LIMITS)
    except FolderError as exc:
        raise SubmissionError(f"{clip(str(exc))} (see 'Size limits' in SUBMITTING.md)") from exc
    for e in entries:
        if e.path.name in DVC_FILES:  # dvc reads these, outside the sandbox, when it hashes submissions/
            raise SubmissionError(f"{folder}: {clip(e.rel, 100)}: a submission may not hold a {e.path.name} (DVC "
                                  "reads it in the organiser's process); remove it")
        rel = os.fsencode(e.rel)  # names need not be UTF-8
        if e.is_symlink:  # the target's own hash: a target may hold "\n" and then the next entry's name
            target = hashlib.sha256(os.fsencode(os.readlink(e.path))).hexdigest()
            h.update(rel + f"\0symlink:{target}\n".encode())
        elif e.is_file:
            h.update(rel + f"\0{sha256_file(e.path)}\n".encode())
        elif not e.is_dir:
            raise SubmissionError(f"{folder}: {clip(e.rel, 100)} is not a regular file, folder or symlink")
    return h.hexdigest()


def _describe_error(err: ErrorDetails) -> tuple[str, str]:
    """(key, message) for one pydantic error, in words a participant understands."""
    key = ".".join(str(p) for p in err["loc"]) or "(top level)"
    kind, value = err["type"], err.get("input")
    if kind == "extra_forbidden":
        return key, f"unknown key (allowed: {', '.join(SubmissionSpec.model_fields)})"
    if kind == "missing":
        return key, "missing required key"
    if kind == "literal_error":
        return key, f"must be one of {', '.join(FORMATS)}, got {show(value)}"
    if kind.endswith("_type"):
        return key, f"expected {kind.removesuffix('_type')}, got {type(value).__name__} {show(value)}"
    if kind == "string_pattern_mismatch":
        return key, (f"must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit "
                     f"(pattern {SLUG}), got {show(value)}")
    if kind == "value_error":
        return key, f"{err.get('ctx', {}).get('error', err['msg'])}, got {show(value)}"
    return key, f"{err['msg']}, got {show(value)}"


class _SpecLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` without anchors or aliases (no "billion laughs"), without tags, and with a nesting limit.

    Nesting is the only recursion in PyYAML (the composer), so the limit rules out a RecursionError."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(None, None, "anchors and aliases (& and *) are not allowed",
                                              event.start_mark)
        if getattr(event, "tag", None) is not None:  # !!binary made bytes the checks and the runner read apart
            raise yaml.composer.ComposerError(None, None, f"tags ({event.tag}) are not allowed", event.start_mark)
        if self._depth >= SPEC_MAX_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nested deeper than {SPEC_MAX_DEPTH} levels",
                                              event.start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node: yaml.Node, deep: bool = False) -> object:
        """A value PyYAML's own constructors refuse with a plain ValueError (a date such as 2027-13-45, an
        integer of more than 4,300 digits) is a YAML error at its line, not a crash of the caller."""
        try:
            return super().construct_object(node, deep=deep)
        except ValueError as exc:
            raise yaml.constructor.ConstructorError(None, None, f"{node.value!r:.60}: {exc}",
                                                    node.start_mark) from exc


def read_spec_file(path: Path) -> object:
    """The parsed YAML of a ``submission.yaml``: a regular file (not a symlink) of at most 64 KiB, UTF-8,
    without anchors or aliases, nested at most 8 deep. Raises ``SubmissionError`` with a one-line reason."""
    path = Path(path)
    try:
        data = read_regular(path, SPEC_MAX_BYTES)
    except FolderError as exc:
        raise SubmissionError(f"{path}: {clip(str(exc).removeprefix(path.name).lstrip(': '))}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SubmissionError(f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                              "save it as UTF-8") from exc
    try:
        return yaml.load(text, Loader=_SpecLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SubmissionError(f"{path}: YAML syntax error{where}: {clip(problem)}") from exc
    except RecursionError as exc:  # last resort; the depth limit should make this unreachable
        raise SubmissionError(f"{path}: YAML nested too deeply") from exc


def load_submission(folder: str | Path) -> Submission:
    """Read and validate ``folder/submission.yaml``; raise ``SubmissionError`` naming file and key."""
    folder = Path(folder)
    path = folder / SPEC_FILE
    if not os.path.lexists(folder):  # a mistyped path: say so, not that the folder lacks its yaml
        raise SubmissionError(f"{folder}: missing: no such submission folder")
    if not os.path.lexists(path):
        raise SubmissionError(f"{path}: missing (every submission folder needs a {SPEC_FILE})")
    raw = read_spec_file(path)
    if not isinstance(raw, dict):
        raise SubmissionError(f"{path}: expected a mapping of keys ({', '.join(SubmissionSpec.model_fields)}),"
                              f" got {type(raw).__name__}")
    try:
        spec = SubmissionSpec.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        lines = [clip(f"{path}: key '{clip(k, 40)}': {m}") for k, m in map(_describe_error, errors[:5])]
        if len(errors) > 5:
            lines.append(f"{path}: and {len(errors) - 5} more errors")
        raise SubmissionError("\n".join(lines)) from exc

    if spec.track not in list_tracks():
        raise SubmissionError(f"{path}: key 'track': unknown track {spec.track!r} "
                              f"(known: {', '.join(list_tracks())})")
    model = Path(spec.model)
    if model.is_absolute():
        raise SubmissionError(f"{path}: key 'model': {show(spec.model)} must be relative to the submission folder")
    try:
        root = folder.resolve()
        target = (root / model).resolve()
        if not target.is_relative_to(root) or target == root:
            raise SubmissionError(f"{path}: key 'model': {show(spec.model)} escapes the submission folder")
        if not target.is_file():
            raise SubmissionError(f"{path}: key 'model': file {show(spec.model)} not found in {folder}")
        if spec.format == "predictions" and target != root / model:  # read here, in the evaluator
            raise SubmissionError(f"{path}: key 'model': {show(spec.model)} is a symlink, passes through one or "
                                  "uses '..'; a predictions CSV must be a plain file in the folder")
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Path.resolve on Python < 3.13)
        raise SubmissionError(clip(f"{path}: key 'model': {show(spec.model)}: "
                                   f"{getattr(exc, 'strerror', None) or exc}")) from exc
    suffix = MODEL_SUFFIX[spec.format]
    if spec.format == "predictions" and target.suffix == NPY_PREDICTIONS:  # a maps track's N maps
        suffix = NPY_PREDICTIONS
    if target.suffix != suffix:
        raise SubmissionError(f"{path}: key 'model': format {spec.format!r} needs a {suffix} file, "
                              f"got {show(spec.model)}")
    return Submission(folder=folder, spec=spec, sha256=folder_sha256(folder))


def _test_folder(inputs: Path) -> Path:
    """The public test folder of a release root, or ``inputs`` itself when it already is such a folder."""
    inputs = Path(inputs).resolve()
    public = layout.public_dir(inputs, "test")
    folder = public if public.is_dir() else inputs
    if not layout.is_input_folder(folder):
        raise FileNotFoundError(f"{inputs}: not a release nor its public test folder (no {layout.INDEX})")
    return folder


def _not_world_readable(folder: Path, limits: WalkLimits = SUBMISSION_LIMITS) -> Path | None:
    """First path the sandbox's unprivileged uid could not read (it runs as one when we are root)."""
    for path, mode in [(folder, folder.lstat().st_mode), *((e.path, e.st.st_mode) for e in walk(folder, limits))]:
        need = stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(mode) else 0)
        if not stat.S_ISLNK(mode) and mode & need != need:
            return path
    return None


def cuda_available() -> bool:
    """:func:`skybench.physics.backend.cuda_available`, imported when asked: physics needs the sim extra, which
    the core harness does not."""
    from skybench.physics.backend import cuda_available as available

    return available()


def _fail(reason: str, ids: np.ndarray, device: str = "unknown", seconds: float = 0.0,
          log: str = "", infrastructure: bool = False) -> PredictResult:
    return PredictResult(False, reason, None, ids, device, seconds, log, infrastructure=infrastructure)


def expected_shapes(output: Output, n: int, input_shape: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    """The prediction shapes a track accepts for ``n`` inputs (``input_shape``: one input image)."""
    if output.kind == "image":
        return [(n, *input_shape)]
    if output.kind == "maps":
        return [(n, *(int(d) for d in output.shape[1:]))]
    if output.kind == "detections":
        return [(n, int(output.max_candidates or 0), 3)]
    shapes: list[tuple[int, ...]] = [(n,)]
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
        hint = ("the same shape as the input, channels first (N, bands, H, W)" if output.kind == "image"
                else f"one array of shape {tuple(output.shape[1:])} per input" if output.kind == "maps"
                else f"per image {output.max_candidates} rows (x, y, score), NaN rows as padding"
                if output.kind == "detections"
                else "one value per input, e.g. probs[:, 1] of a two-class output" if output.kind == "score"
                else "one value per input" + (" or one PDF row per input" if len(shapes) > 1 else ""))
        return f"returned shape {tuple(pred.shape)}, expected {want} for a {output.kind!r} track | hint: return {hint}"
    if output.kind == "detections":  # NaN rows are padding: the shared check of candidates, in float32 as kept
        from skybench.common import validate_detections

        try:
            validate_detections(np.asarray(pred, dtype=np.float32), n, int(output.max_candidates or 0),
                                input_shape[-1] if input_shape else 0)
        except ValueError as exc:
            return clip(f"returned invalid detections: {exc}")
        return ""
    bad = int(np.size(pred) - np.count_nonzero(np.isfinite(np.asarray(pred, dtype=np.float32))))
    if bad:  # counted in float32, the dtype we keep: 1e300 is inf there
        return f"returned {bad} non-finite value{'s' if bad != 1 else ''} (NaN/inf)"
    if output.kind == "pdf" and pred.ndim == 2:
        # non-negative bin probabilities, rows summing to 1 within 1e-3
        from skybench.common import validate_pdf

        try:
            validate_pdf(pred, pred.shape[1])
        except ValueError as exc:
            return f"returned an invalid PDF: {exc}"
    return ""


CSV_MAX_FIELDS = 16  # fields in one CSV row: the formats have 2 (id,score) or 4 (tile_id,x,y,score)
_CSV_QUOTED = re.compile(rb'([,\r\n])"(?:[^"]|"")*+"')  # a quoted field as pandas' tokenizer reads one
_CSV_NOT_SEPARATOR = bytes(sorted(set(range(256)) - set(b",\r\n")))
_CSV_WIDE = re.compile(b"," * CSV_MAX_FIELDS)


def _csv_too_wide(data: bytes) -> bool:
    """Whether a row of the CSV ``data`` may have more than :data:`CSV_MAX_FIELDS` fields, as pandas' C tokenizer
    splits it (quotes open a field only at its start; an unclosed one is counted as text: never fewer commas).
    pandas makes an object per column of the header and an index level per extra field of the first row, and
    de-duplicates header names in quadratic time: a few hundred KB of commas hold the evaluator for hours."""
    if b'"' in data:  # pandas skips a UTF-8 BOM, so a quote after it opens the first field
        data = _CSV_QUOTED.sub(rb"\1", b"\n" + data.removeprefix(b"\xef\xbb\xbf"))
    return _CSV_WIDE.search(data.translate(None, _CSV_NOT_SEPARATOR)) is not None


def _csv_rows(data: bytes) -> int:
    """The most rows (header included) pandas' tokenizer can make of the CSV ``data``: one per line terminator
    (CRLF, CR or LF, which it all accepts) and a last line without one."""
    return data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n") + 1


def _read_csv(path: Path, dtype: dict[str, type] | None = None,
              max_rows: int | None = None) -> tuple[pd.DataFrame | None, str]:
    """The CSV at ``path`` read as plain text (a regular file of at most CSV_MAX_BYTES, rows of at most
    CSV_MAX_FIELDS fields; with ``max_rows``, at most twice that many lines, blank ones included), or (None,
    reason). pandas holds an object per row and the checks hash every id: 64 MiB of short rows (7.6 million)
    held the evaluator, outside any sandbox limit, for a minute at 1.8 GB whatever the test set's size."""
    import io

    try:  # the bytes of a plain file (no symlink, FIFO, archive name or size trick) parsed as plain CSV
        data = read_regular(path, CSV_MAX_BYTES)
    except FolderError as exc:
        return None, clip(str(exc))
    if _csv_too_wide(data):
        return None, clip(f"{path.name}: a row has more than {CSV_MAX_FIELDS} fields; write one row per prediction "
                          "with only the format's columns")
    if max_rows is not None and (rows := _csv_rows(data)) > 2 * (max_rows + 1) + 16:
        return None, clip(f"{path.name}: {rows} lines, for at most {max_rows} predictions; write a header and "
                          "one row per prediction")
    try:
        return pd.read_csv(io.BytesIO(data), dtype=dtype, compression=None, encoding="utf-8",
                           encoding_errors="strict"), ""
    except Exception as exc:
        return None, clip(f"{path.name}: not a readable CSV: {(str(exc).strip().splitlines() or [''])[-1]}")


def read_detections_csv(path: Path, ids: np.ndarray, output: Output,
                        input_shape: tuple[int, ...]) -> tuple[np.ndarray | None, str]:
    """Candidates from a ``tile_id,x,y,score`` CSV (one row per candidate) as float32 (N, K, 3) in the order of
    ``ids``, NaN-padded, or (None, reason): unknown tiles, more than K candidates for a tile, coordinates outside
    the tile and non-finite values are refused (:func:`skybench.common.detections_from_csv`)."""
    from skybench.common import detections_from_csv

    df, reason = _read_csv(path, max_rows=len(ids) * int(output.max_candidates or 0))
    if df is None:
        return None, reason
    if sorted(df.columns) != ["score", "tile_id", "x", "y"]:
        return None, clip(f"{path.name}: expected the columns tile_id,x,y,score, got {','.join(map(str, df.columns))}")
    try:
        pred = detections_from_csv(df, [int(i) for i in ids], int(output.max_candidates or 0),
                                   input_shape[-1] if input_shape else 0)
    except (ValueError, OverflowError) as exc:
        return None, clip(f"{path.name}: {str(exc).removeprefix('detections CSV: ')}")
    with np.errstate(over="ignore"):  # a value beyond float32 becomes inf, refused next
        out = pred.astype(np.float32)
    if reason := validate_predictions(out, len(ids), output, input_shape):  # in float32, as kept (1e300 is inf)
        return None, clip(f"{path.name}: {reason}")
    return out, ""


def read_predictions_csv(path: Path, ids: np.ndarray) -> tuple[np.ndarray | None, str]:
    """Scores from an ``id,score`` CSV in the order of ``ids``, or (None, reason)."""
    name = path.name
    df, reason = _read_csv(path, {"id": str}, max_rows=len(ids))
    if df is None:
        return None, reason
    if sorted(df.columns) != ["id", "score"]:
        return None, clip(f"{name}: expected the columns id,score, got {','.join(map(str, df.columns))}")

    def some(values: list) -> str:
        return ", ".join(map(show, values[:3])) + (", ..." if len(values) > 3 else "")

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
    try:  # a whole number beyond uint64 (400 nines) is kept as text, and to_numeric raises OverflowError on it
        scores = pd.to_numeric(df["score"], errors="coerce")
    except (OverflowError, ValueError, TypeError) as exc:
        return None, clip(f"{name}: a score is not a number a float can hold ({type(exc).__name__}: {exc})")
    bad_rows = got[scores.isna() & df["score"].notna()].tolist()
    if bad_rows:
        return None, f"{name}: non-numeric score for {len(bad_rows)} ids ({some(bad_rows)})"
    out = pd.Series(scores.to_numpy(np.float64), index=got).reindex(want).to_numpy(np.float32)
    bad = int(np.size(out) - np.count_nonzero(np.isfinite(out)))
    if bad:
        return None, f"{name}: {bad} non-finite score{'s' if bad != 1 else ''} (NaN/inf/empty)"
    return out, ""


def default_threads() -> int:
    """A sandboxed model's CPU threads: the host's $OMP_NUM_THREADS when set (scripts/repro.py sets 1 for every
    stage), else min(4, cores)."""
    given = os.environ.get("OMP_NUM_THREADS", "")
    return int(given) if given.isdigit() and int(given) > 0 else min(4, os.cpu_count() or 1)


def sandboxed_predict(sub: Submission, inputs: Path, *, scratch: Path, track: Track, limit: int | None = None,
                      gpu: bool | None = None, threads: int | None = None,
                      require_cgroups: bool | None = None, batch_size: int | None = None,
                      private: Sequence[Path] = ()) -> PredictResult:
    """Predict the test set of the release ``inputs`` (its root or its public test folder).

    Code runs in the sandbox with the track's limits, seeing only the submission and the public test
    images; the parent then checks count, shape and finiteness. ``gpu=None``: use CUDA when available.
    With a real set folded into the release (:mod:`skybench.release.mixing`) the test and real sets are one stream;
    the caller splits the result. ``threads``: CPU threads
    of the model (default :func:`default_threads`); an executor running several sandboxes at once gives each fewer.
    ``require_cgroups``: refuse to run without cgroup limits (None: when ``inputs`` is in a ``challenge`` release).
    ``batch_size``: default the track's evaluation batch size (``skybench validate`` tries others too)."""
    test_dir = _test_folder(inputs)
    all_ids = pd.read_parquet(layout.index_path(test_dir))["id"].to_numpy()
    n = len(all_ids) if limit is None else min(limit, len(all_ids))
    ids = all_ids[:n]
    shape = _input_shape(track, test_dir)
    if sub.spec.format == "predictions":
        npy = sub.model_path.suffix == NPY_PREDICTIONS
        if npy != (track.output.kind == "maps"):
            want = "a .npy of one map per test id (public test index order)" if track.output.kind == "maps" \
                else "a tile_id,x,y,score .csv" if track.output.kind == "detections" else "an id,score .csv"
            return _fail(f"predictions file {sub.model_path.name}: a {track.output.kind!r} track takes {want}", ids,
                         device="none")
        if npy:  # a fixed set of maps: picked so that its statistics match, it beats the truth process itself
            return _fail(f"predictions file {sub.model_path.name}: a maps track takes a generator, not its maps: "
                         "each evaluation draws the latents afresh, and each map must be a function of its own "
                         "latent (skybench.tasks.generate.fresh); submit the model in a code format", ids,
                         device="none")
        if track.output.kind == "detections":
            pred, reason = read_detections_csv(sub.model_path, all_ids, track.output, shape)
        else:
            pred, reason = read_predictions_csv(sub.model_path, all_ids)
        if pred is None:
            return _fail(reason, ids, device="none")
        return PredictResult(True, "", pred[:n], ids, "none", 0.0)

    if os.geteuid() == 0:  # the sandboxed command runs as an unprivileged uid
        release_limits = WalkLimits(max_depth=4, max_entries=None, max_bytes=None)  # the organiser's files
        for folder, walk_limits in ((sub.folder, SUBMISSION_LIMITS), (test_dir, release_limits)):
            ours = folder == test_dir  # the release's files: the organiser's failure, retried once mended
            try:
                bad = _not_world_readable(folder.resolve(), walk_limits)
            except FolderError as exc:
                return _fail(clip(str(exc)), ids, infrastructure=ours)
            if bad:  # the host's either way: no team sets a mode (git keeps only the x bit, the checkout's umask
                # does the rest; the server's store makes every file 0444), and the mode is not in the folder's hash,
                # so a FAILED record of the submission would be reused after the organiser's chmod
                return _fail(f"{bad} is not world-readable; the sandbox cannot read it (chmod -R a+rX)", ids,
                             infrastructure=True)
    gpu = cuda_available() if gpu is None else gpu
    scratch = Path(scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    out, info = scratch / "predictions.npy", scratch / "runner.json"
    for stale in (out, info):
        stale.unlink(missing_ok=True)

    n_threads = str(threads or default_threads())
    env = dict.fromkeys(THREAD_VARS, n_threads) | {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONNOUSERSITE": "1"}
    if not gpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    # else none: the sandbox holds only this task's /dev/nvidiaN (sandbox.gpu_binds, from the host's
    # $CUDA_VISIBLE_DEVICES), which CUDA inside numbers 0; passing the host's index N > 0 would hide it
    argv = [sys.executable, "-m", "skybench.harness.runner", "--submission", "/submission", "--inputs", "/inputs",
            "--out", "/scratch/predictions.npy", "--batch-size", str(batch_size or track.evaluation.batch_size),
            "--device", "auto" if gpu else "cpu"]
    binds = [(sub.folder, "/submission"), (test_dir, "/inputs")]  # one input stream, nothing else
    if limit is not None:
        argv += ["--limit", str(n)]
    box = track.sandbox
    wall, cpu = box.scaled(n, int(n_threads))
    if require_cgroups is None:
        require_cgroups = _challenge(test_dir)
    limits = Limits(memory_mb=box.memory_mb, cpu_seconds=cpu, wall_seconds=wall, max_processes=box.max_processes,
                    cpus=float(n_threads), scratch_mb=box.scratch_mb, require_cgroups=require_cgroups)
    # its releases' hidden splits, the organiser's key and the records stay out of sight; ``private``: the release
    # (and real set) of inputs that are not in one (a Ray shard's view, a maps track's drawn latents)
    private = list(dict.fromkeys([*map(Path, private), project_root()]))
    try:
        private.insert(0, layout.release_of(test_dir)[0])
    except ValueError:  # a bare test folder (Ray shard views, validate): not a release
        pass
    # the most an acceptable output can be (8-byte values): no more of any is copied out
    most = _most_values(track, n, shape)
    outputs = {out.name: NPY_MAX_HEADER + NPY_MAX_ITEMSIZE * most + 128, info.name: RUNNER_JSON_MAX_BYTES + 1}
    res = run_sandboxed(argv, scratch=scratch, ro_binds=binds, limits=limits, env=env, gpu=gpu, outputs=outputs,
                        private=private)
    device, problem = _read_runner_info(info)
    if not gpu:  # no GPU bound in: the CPU, whatever a file written in the sandbox says
        device = "cpu"
    if not res.ok:
        reason = res.reason
        if reason.startswith("exited with status") and (error := _runner_error(info)):
            reason = clip(f"{reason.partition(':')[0]}: runner: {error}", MAX_RUNNER_ERROR)
        return _fail(reason, ids, device, res.wall_seconds, res.stderr, infrastructure=res.infrastructure)
    if problem:  # the runner always writes a valid runner.json; anything else was written by the model
        return _fail(problem, ids, device, res.wall_seconds, res.stderr)
    return _read_output(out, ids, n, track, device, res.wall_seconds, res.stderr, shape, most)


def _challenge(test_dir: Path) -> bool:
    """Whether ``test_dir`` (a release's public test folder) belongs to a ``challenge``-profile release, which
    must not run without cgroups."""
    try:
        return read_manifest(layout.release_of(test_dir)[0]).get("profile") == "challenge"
    except Exception:  # a bare test folder (tests, Ray shard views): no manifest
        return False


RUNNER_JSON_MAX_BYTES = 64 * 1024
NPY_MAX_HEADER = 10_000  # numpy's own default limit on the header of an .npy file
NPY_MAX_ITEMSIZE = 8  # bytes of one predicted value: float64 at most (a long double is read whole, at twice that)


def _json_depth(text: str) -> int:
    """Deepest nesting of ``[``/``{`` in a JSON text (outside strings), counted without recursion."""
    depth = deepest = 0
    in_str = escaped = False
    for c in text:
        if in_str:
            escaped, in_str = (False, True) if escaped else (c == "\\", c != '"')
        elif c == '"':
            in_str = True
        elif c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
    return deepest


def _read_runner_info(info: Path) -> tuple[str, str]:
    """(device, problem) from the runner's ``runner.json``: "unknown" and a one-line problem when it is
    missing, not a small regular file, not UTF-8, nested, or not the object the runner writes."""
    if not os.path.lexists(info):
        return "unknown", "runner.json: missing (the runner did not finish)"
    try:
        text = read_regular(info, RUNNER_JSON_MAX_BYTES).decode("utf-8")
        if (depth := _json_depth(text)) > 4:  # the runner writes a flat object
            return "unknown", f"runner.json: nested {depth} levels deep; the runner writes 1"
        data = json.loads(text)
    except (FolderError, OSError, ValueError, RecursionError) as exc:  # UnicodeError, JSONDecodeError
        return "unknown", clip(f"runner.json: not the runner's output: {type(exc).__name__}: {exc}")
    if not isinstance(data, dict):
        return "unknown", f"runner.json: expected an object, got {type(data).__name__}"
    device = data.get("device")
    return (device if device in ("cpu", "cuda") else "unknown"), ""


MAX_RUNNER_ERROR = 480  # characters of a reason that carries the runner's error line


def _runner_error(info: Path) -> str:
    """The one-line ``error`` the runner wrote to ``runner.json`` when the model failed ("" when there is none).
    The sandbox wrote it, so it is the team's own text: bounded, one line, never anything from the labels."""
    try:
        data = json.loads(read_regular(info, RUNNER_JSON_MAX_BYTES).decode("utf-8"))
    except (FolderError, OSError, ValueError, RecursionError):
        return ""
    error = data.get("error") if isinstance(data, dict) else None
    return clip(error, MAX_RUNNER_ERROR - 40) if isinstance(error, str) else ""


def _read_npy(out: Path, max_items: int, why: Callable[[np.ndarray], str]) -> np.ndarray | str:
    """The array in the ``.npy`` file ``out``, or a one-line reason why it is not a plain numeric .npy array
    whose size is exactly its header's. More than ``max_items`` values are never read: ``why`` (the shape
    check) explains them on a zero-copy stand-in. Read into memory, not mapped: a mapped file that shrinks
    would crash this process with SIGBUS."""
    fmt = np.lib.format
    try:
        with open_regular(out) as f:
            size = os.fstat(f.fileno()).st_size
            version = fmt.read_magic(f)  # ValueError unless the file starts with the .npy magic
            if version not in ((1, 0), (2, 0), (3, 0)):
                return f"predictions file has an unknown .npy version {version}"
            read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, fortran, dtype = read_header(f, max_header_size=NPY_MAX_HEADER)
            offset = f.tell()
            if dtype.hasobject or dtype.names is not None or dtype.subdtype is not None or dtype.kind not in "iuf":
                return f"returned non-numeric values (dtype {clip(str(dtype), 60)})"
            if dtype.itemsize > NPY_MAX_ITEMSIZE:  # long double: read whole, twice a float64 answer's memory
                return (f"predictions file holds {dtype.itemsize}-byte values (dtype {dtype}); write float32 or "
                        "float64")
            if fortran:
                return "predictions file is Fortran-ordered; write it with np.save of a C-ordered array"
            if any(d < 0 for d in shape):  # numpy's header parser takes (-8, -8): 64 values, no valid shape
                return f"predictions file header has a negative dimension: shape {clip(str(shape), 60)}"
            count = math.prod(shape)  # exact integers: no overflow
            if size != offset + count * dtype.itemsize:
                return f"predictions file is {size} bytes, but its header describes {offset + count * dtype.itemsize}"
            if count > max_items:
                return why(np.broadcast_to(np.zeros((), dtype), shape)) or f"returned {count} values, too many"
            data = f.read(count * dtype.itemsize)
    except (FolderError, OSError, ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        return clip(f"predictions file is not a .npy array: {type(exc).__name__}: {exc}")
    if len(data) != count * dtype.itemsize:
        return "predictions file changed while it was read"
    try:  # numpy's header parser takes (64, True), (0, 2**70) and 65 dimensions: no array numpy can make
        return np.frombuffer(data, dtype).reshape(shape)
    except (ValueError, TypeError) as exc:
        return clip(f"predictions file header has an invalid shape {clip(str(shape), 60)}: {exc}")


def _read_output(out: Path, ids: np.ndarray, n: int, track: Track, device: str, seconds: float,
                 log: str, shape: tuple[int, ...], max_items: int) -> PredictResult:
    """Load and check one predictions file written by the sandboxed runner (one input's ``shape``; at most
    ``max_items`` values)."""
    if not os.path.lexists(out):
        return _fail("produced no predictions file", ids, device, seconds, log)
    pred = _read_npy(out, max_items, lambda a: validate_predictions(a, n, track.output, shape))
    if isinstance(pred, str):
        return _fail(pred, ids, device, seconds, log)
    if reason := validate_predictions(pred, n, track.output, shape):
        return _fail(reason, ids, device, seconds, log)
    return PredictResult(True, "", np.array(pred, dtype=np.float32), ids, device, seconds, log)


def _most_values(track: Track, n: int, shape: tuple[int, ...]) -> int:
    """The most values an acceptable output for ``n`` inputs of ``shape`` holds."""
    return max(math.prod(s) for s in expected_shapes(track.output, n, shape))


def _input_shape(track: Track, test_dir: Path | None = None) -> tuple[int, ...]:
    """Shape of one input image as the model got it (what an ``image`` output must match, the tile candidates must
    lie in): read from the inputs' ``images`` shards, so a release with per-profile geometry (a detect track's tile
    size), or a Ray shard's view of one, is checked against its own images; the track's for inputs without images
    (or without ``test_dir``)."""
    if test_dir is not None and layout.shard_paths(test_dir, "images"):
        return shards(test_dir, "images")[0].shape[1:]
    return track.image_shape()
