"""Track definitions: one YAML file per track under ``benchmarks/``, validated here.

:class:`Track` holds what every task shares (survey, cut-out, splits, output, sandbox, evaluation); each task
narrows it in its ``config.py`` (``task: Literal[name]`` and its typed ``population`` and ``label``).
:func:`load_track` validates a YAML once, against the union of the registered tasks' track models
discriminated on ``task``, and returns that task's model."""

from __future__ import annotations

import functools
import math
import os
import re
import subprocess
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union

import yaml
from pydantic import Field, TypeAdapter, ValidationError, model_validator

from skybench.common import Strict as _Strict

T = TypeVar("T")


class Band(_Strict):
    name: str
    zero_point: float = Field(description="magnitude giving 1 e-/s")
    sky_brightness: float = Field(description="mag/arcsec^2")
    exposure_time: float = Field(gt=0, description="seconds per exposure")
    num_exposures: int = Field(gt=0)
    read_noise: float = Field(ge=0, description="e- per exposure")
    ccd_gain: float = Field(gt=0)
    seeing: float = Field(gt=0, description="Gaussian PSF FWHM [arcsec]")


class Survey(_Strict):
    name: str
    pixel_scale: float = Field(gt=0, description="arcsec/pixel")
    bands: list[Band]


CORE_LEVELS = 5  # nested 4x finer grids on the 7x7 pixels around each centred profile's centre (Renderer.image)


class Cutout(_Strict):
    size: int = Field(gt=0)
    supersampling: int = Field(1, ge=1)
    core_levels: int = Field(CORE_LEVELS, ge=0)  # 0: the supersampled grid alone


class Split(_Strict):
    train: int = Field(ge=0)
    val: int = Field(ge=0)
    test: int = Field(ge=0)


class Metrics(_Strict):
    primary: str
    higher_is_better: bool
    report: list[str]


class LeaderboardView(_Strict):
    """What ``skybench leaderboard TRACK`` prints by default in the terminal (``--columns``/``--all`` choose
    others; the markdown, CSV and HTML forms keep every column). Names are leaderboard columns, plus
    ``<primary>_ci`` (the primary metric's 95% interval in one cell); a default the board lacks is left out."""

    columns: list[str] = Field(min_length=1)


class Output(_Strict):
    """What a submission returns per input. ``shape`` uses "N" for the number of inputs.

    score: (N,) ranking score. point: (N,) value. pdf: a point estimate (N,) or a PDF (N, K) on ``grid``
    (K = ``grid[2]`` bins, centres spread evenly over [grid[0], grid[1]]). image: same shape as the input.
    maps: one array of the fixed per-object ``shape`` (after "N") per input, e.g. a generated map (N, 1, H, W).
    detections: per input image up to ``max_candidates`` (K) candidates (x, y, score) in pixels, NaN-padded rows:
    (N, K, 3)."""

    kind: Literal["score", "point", "pdf", "image", "maps", "detections"]
    shape: list[str | int]
    max_candidates: int | None = Field(None, gt=0)  # K of a ``detections`` output

    @model_validator(mode="after")
    def _check_candidates(self) -> Output:
        if (self.kind == "detections") != (self.max_candidates is not None):
            raise ValueError("output.max_candidates (K, candidates per image) goes with kind detections, and only "
                             f"with it; got kind {self.kind!r}, max_candidates {self.max_candidates}")
        return self
    grid: tuple[float, float, int] | None = None  # (low, high, K) bin centres of a PDF output
    point_estimate: Literal["mean", "median", "mode"] = "mean"  # how a PDF becomes a point estimate


class SandboxLimits(_Strict):
    """Limits of one sandboxed run. Time scales with the work: wall = load_seconds + seconds_per_object x
    objects, capped at wall_seconds; CPU time = that wall x the model's threads, capped at cpu_seconds."""

    memory_mb: int = Field(4096, gt=0)
    cpu_seconds: int = Field(600, gt=0)
    wall_seconds: float = Field(900, gt=0)  # the cap, whatever the number of objects
    max_processes: int = Field(64, gt=0)
    load_seconds: float = Field(60, gt=0)  # start-up: interpreter, framework import (TF ~10 s), model load
    seconds_per_object: float = Field(0.05, ge=0)
    scratch_mb: int = Field(1024, gt=0)  # size of the sandbox's /scratch

    def scaled(self, objects: int, threads: int) -> tuple[float, int]:
        """(wall seconds, CPU seconds) for ``objects`` inputs predicted with ``threads`` threads."""
        wall = min(self.wall_seconds, self.load_seconds + self.seconds_per_object * objects)
        return wall, max(1, min(self.cpu_seconds, int(wall * threads) + 1))


class Evaluation(_Strict):
    batch_size: int = Field(256, gt=0)
    # A release of real objects (path relative to the project root); each submission is also run on it in the
    # same sandboxed run and scored by the task's scorer (lens: recall of real lenses; enhance: real truth).
    real_set: str | None = None
    # Public/private leaderboard (Kaggle-style): the hidden test ids are split with ``split_seed`` into a public
    # part (``public_fraction`` of them) and a private part; each part is scored on its own (metrics
    # ``public_<m>``, ``private_<m>``). While ``phase`` is ``open`` the leaderboard shows the public part only;
    # once ``closed`` the private part ranks it. None: no split, the whole test set ranks (the default).
    public_fraction: float | None = Field(None, gt=0, lt=1)
    split_seed: int = 0
    phase: Literal["open", "closed"] = "open"
    # Rank intervals and tie groups (skybench.tracking.ranks): paired bootstrap resamples of the ranked part.
    rank_resamples: int = Field(1000, gt=0)
    rank_seed: int = 0
    # Tracks whose submissions are evaluated on this track too (a transfer test: same task, inputs and output, e.g.
    # lens-space models on lens-space-realsrc); their records are filed under this track.
    also_from: list[str] = []


_METRIC_SAFE = re.compile(r"[A-Za-z0-9_.\-]+")  # within MLflow's metric-name characters, no "/" or spaces


class Stratum(_Strict):
    """One ``strata:`` entry: a metadata column of the hidden test table and its bins, either numeric ``edges``
    (bins ``[e_i, e_i+1)``, the last one closed; values outside are in no bin) or categorical ``values``. The
    scorer reports the task's per-bin metrics (:func:`skybench.common.stratum_key` names them); ``metric`` is the
    one ``skybench leaderboard TRACK --by COLUMN`` prints and the small-multiples plot draws."""

    column: str
    edges: list[float] | None = None
    values: list[str] | None = None
    metric: str

    @model_validator(mode="after")
    def _check(self) -> Stratum:
        where = f"strata: column {self.column!r}"
        if (self.edges is None) == (self.values is None):
            raise ValueError(f"{where}: give either edges (numeric bins) or values (categories), not "
                             f"{'both' if self.edges is not None else 'neither'}")
        if self.edges is not None:
            e = self.edges
            if len(e) < 2 or not all(math.isfinite(x) for x in e):
                raise ValueError(f"{where}: edges must be at least two finite numbers, got {e}")
            if bad := [i for i in range(1, len(e)) if e[i] <= e[i - 1]]:
                raise ValueError(f"{where}: edges must be strictly increasing, got {e} (edge {bad[0]} = "
                                 f"{e[bad[0]]:g} after {e[bad[0] - 1]:g}); sort them")
        if self.values is not None and (not self.values or len(set(self.values)) != len(self.values)):
            raise ValueError(f"{where}: values must be distinct and non-empty, got {self.values}")
        from skybench.common import stratum_labels

        labels = stratum_labels(self.edges, self.values)
        if len(set(labels)) != len(labels):
            raise ValueError(f"{where}: the bins {labels} have the same name (edges print with 6 significant "
                             "digits); use edges that differ there")
        if unsafe := [x for x in (self.column, self.metric, *labels) if not _METRIC_SAFE.fullmatch(x)]:
            raise ValueError(f"{where}: {unsafe[0]!r} cannot be part of an MLflow metric name; use letters, digits and "
                             "_ . - only")
        return self


class Track(_Strict):
    """What every track declares; a task's track model (``skybench.tasks.<task>.config``) narrows ``task`` to its
    name and types ``population`` and ``label``."""

    name: str
    task: str
    description: str
    survey: Survey
    cutout: Cutout | None = None  # None for a track whose inputs are catalogue features only
    # Arrays a model receives per object, in this order (see skybench.harness.runner): image cut-outs and/or
    # features; a generator gets latent vectors (and, on a conditional track, the parameters).
    inputs: list[Literal["images", "features", "latents", "params"]] = ["images"]
    profiles: dict[str, Split]
    population: Any
    label: Any
    metrics: Metrics
    leaderboard: LeaderboardView | None = None  # None: rank, group, team, name, status, primary and its interval
    output: Output
    sandbox: SandboxLimits = SandboxLimits()
    evaluation: Evaluation = Evaluation()
    # Metadata columns whose bins get their own metrics (stratified scoring; see Stratum).
    strata: list[Stratum] = []

    @model_validator(mode="after")
    def _check_strata(self) -> Track:
        known, metrics = self.strata_columns(), self.strata_metrics()
        seen: set[str] = set()
        for i, s in enumerate(self.strata):
            if s.column in seen:
                raise ValueError(f"strata[{i}]: column {s.column!r} is listed twice")
            seen.add(s.column)
            if known is not None and s.column not in known:
                raise ValueError(f"strata[{i}]: unknown column {s.column!r}: the hidden test table of track "
                                 f"{self.name!r} has no such column; choose one of {', '.join(sorted(known))}")
            if metrics is not None and s.metric not in metrics:
                raise ValueError(f"strata[{i}] (column {s.column!r}): unknown metric {s.metric!r}; the {self.task} "
                                 f"task reports per bin {', '.join(sorted(metrics))}")
        return self

    def for_profile(self, profile: str) -> Track:
        """This track with its per-profile values (``{demo: 512, challenge: 1024}`` where a task's model allows
        one, :func:`per_profile`) resolved for ``profile``: the track a release of that profile is simulated,
        validated and scored with (:func:`for_release`). A track without per-profile values returns itself."""
        return self

    def check_per_profile(self, value: object, where: str) -> None:
        """A per-profile mapping must name exactly the track's profiles (ValueError otherwise)."""
        if isinstance(value, dict) and set(value) != set(self.profiles):
            raise ValueError(f"{where}: a per-profile value names the profiles {sorted(value)}, the track has "
                             f"{sorted(self.profiles)}; give one value per profile, or a single value for all")

    def strata_columns(self) -> set[str] | None:
        """Hidden-table columns ``strata:`` may name (None: not checked here; the scorer checks the table)."""
        return None

    def strata_metrics(self) -> set[str] | None:
        """Per-bin metric names a stratum's ``metric`` may name (None: not checked)."""
        return None

    @property
    def band_names(self) -> list[str]:
        return [b.name for b in self.survey.bands]

    def image_shape(self) -> tuple[int, ...]:
        """Shape of one input image, (bands, H, W); () for a track without images (catalogue features)."""
        if self.cutout is None:
            return ()
        return (len(self.band_names), self.cutout.size, self.cutout.size)

    def split_sizes(self, profile: str) -> Split:
        if profile not in self.profiles:
            raise KeyError(f"track {self.name!r} has no profile {profile!r}; it has {sorted(self.profiles)}")
        return self.profiles[profile]


def per_profile(value: T | dict[str, T], profile: str, where: str) -> T:
    """A per-profile value resolved: ``{demo: a, challenge: b}`` -> the profile's, a single value -> itself."""
    if not isinstance(value, dict):
        return value
    if profile not in value:
        raise ValueError(f"{where} depends on the profile ({value}) and has no value for profile {profile!r}; "
                         "add one, or make the release with one of those profiles")
    return value[profile]


def for_release(track: Track, release: str | Path) -> Track:
    """``track`` resolved for the profile of the release at ``release`` (its manifest's ``profile``)."""
    from skybench.release.verify import read_manifest

    return track.for_profile(str(read_manifest(Path(release)).get("profile")))


def project_root() -> Path:
    """The repository root: $SKYBENCH_ROOT, else the nearest parent holding ``benchmarks/``."""
    if env := os.environ.get("SKYBENCH_ROOT"):
        return Path(env).resolve()
    for parent in [Path.cwd(), *Path.cwd().parents]:
        if (parent / "benchmarks").is_dir():
            return parent
    return Path.cwd()


def git_commit() -> str:
    """HEAD commit of the project root, or ``unknown`` outside a git repository (or before any commit)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(project_root()), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def default_release(track: Track) -> Path:
    """Where the pipeline writes the track's release (``releases/<track>``)."""
    return project_root() / "releases" / track.name


def benchmarks_dir() -> Path:
    return project_root() / "benchmarks"


def list_tracks() -> list[str]:
    return sorted(p.stem for p in benchmarks_dir().glob("*.yaml"))


def load_track(name_or_path: str | Path) -> Track:
    """Load and validate a track by name (``lens-space``) or by path to its YAML file."""
    path = Path(name_or_path)
    if not path.suffix:
        path = benchmarks_dir() / f"{name_or_path}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no track definition {path}; known tracks: {', '.join(list_tracks())}")
    try:  # a ValueError, as any invalid definition: the twin checks pass over a track that cannot be loaded
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from exc
    from skybench.tasks import get_task, task_names

    task = raw.get("task") if isinstance(raw, dict) else None
    if task not in task_names():
        raise ValueError(f"{path}: unknown task {task!r}; known tasks: {', '.join(task_names())}")
    try:
        track = _track_adapter(tuple(get_task(t).track_model for t in task_names())).validate_python(raw)
    except ValidationError as exc:
        errors = exc.errors()  # "key.path: message" each, without the discriminated union's internal names
        lines = [f"{'.'.join(map(str, e['loc'][1:] or e['loc']))}: {e['msg']}" for e in errors[:5]]
        more = f"; and {len(errors) - 5} more" if len(errors) > 5 else ""
        raise ValueError(f"{path}: invalid track definition: {'; '.join(lines)}{more}") from exc
    kinds = get_task(track.task).output_kinds
    if track.output.kind not in kinds:
        raise ValueError(f"{path}: output.kind {track.output.kind!r} is not one of the {track.task} task's "
                         f"{', '.join(kinds)}")
    return track


@functools.cache
def _track_adapter(models: tuple[type[Track], ...]) -> TypeAdapter[Track]:
    """A validator of the union of ``models`` discriminated on ``task`` (one per registered task)."""
    if len(models) == 1:
        return TypeAdapter(models[0])
    union: Any = Annotated[Union[models], Field(discriminator="task")]  # noqa: UP007 - a runtime tuple of types
    return TypeAdapter(union)
