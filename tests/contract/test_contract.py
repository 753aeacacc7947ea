"""The contract suite: one set of checks run over every registered science task (scikit-learn's
``check_estimator`` for skybench tasks). A new task gets these tests for free; docs/ADDING_A_TASK.md.

Each task is checked on its tracks (``benchmarks/*.yaml`` with that ``task:`` and a ``demo`` profile; the toy
task's ``toy.yaml``), simulated at a tiny size: the first track of each task in the fast lane, the others
``slow``. For each track:

* the same seed gives byte-identical releases whatever the chunk size and the number of worker processes;
* hidden label columns and hidden arrays never reach the public test split (nor do label values hide in a
  public array);
* the scorer rates the task's ``oracle()`` best (its metric's ideal value, where known), does not depend on
  the order of the objects, and rates shuffled oracle predictions worse, near chance;
* ``score_real`` works on a small real set (a second simulated release, with another seed, as the truth) and
  rates the oracle's real predictions at the ideal value of ``real_<primary>``, where known;
* the output kind accepts the oracle and rejects wrong shapes, NaN, inf and non-numbers with a one-line reason.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import toy
import yaml

from skybench.harness.submission import MAX_MESSAGE, _input_shape, expected_shapes, validate_predictions
from skybench.harness.visibility import participant_artifacts
from skybench.release import layout
from skybench.release.reader import HiddenSplit, Release, open_release
from skybench.simulate import simulate_release
from skybench.tasks import get_task, task_names
from skybench.tasks.base import Task
from skybench.tracks import Track, benchmarks_dir

SIZE = 24  # test objects of a contract release (train and val scale with it)
REAL_SIZE = 8  # objects of the stand-in real set
SEED = 11
PROFILE = "demo"
BACKEND = "numpy"  # the CPU reference (auto would probe torch and CUDA first, seconds)
SHUFFLES = 2
# Tracks outside benchmarks/ that the suite also checks (a task kept with the tests: its own YAML).
EXTRA_TRACKS = {"toy": [toy.TRACK_FILE]}
# The value of a perfect prediction, for metrics that have one; a primary metric not listed is only checked
# to rate the oracle better than shuffled predictions.
IDEAL = {"auroc": 1.0, "tpr0": 1.0, "tpr10": 1.0, "sigma_mad": 0.0, "sigma_total": 0.0, "outlier_frac": 0.0,
         "psnr": math.inf, "ssim": 1.0, "median_rel_flux_error": 0.0, "average_precision": 1.0}
# The expected value of predictions unrelated to the truth, with the tolerance of SIZE objects.
CHANCE = {"auroc": (0.5, 0.25)}


@dataclass(frozen=True)
class Case:
    task: str
    path: Path | None  # None: the task has no track to check (a failure of the case)


# Tasks whose case alone takes ~20 s or more here (enhance: SSIM and moments of every image; detect: three releases
# of 512-pixel tiles, ~40 s): make test only.
HEAVY_TASKS = {"enhance", "detect"}


def _cases() -> list[object]:
    by_task: dict[str, list[Path]] = {}
    for path in [*sorted(benchmarks_dir().glob("*.yaml")), *(p for ps in EXTRA_TRACKS.values() for p in ps)]:
        raw = yaml.safe_load(path.read_text())
        if isinstance(raw, dict) and PROFILE in (raw.get("profiles") or {}):
            by_task.setdefault(str(raw.get("task")), []).append(path)
    cases: list[object] = []
    for name in task_names():
        paths: list[Path | None] = [*by_task.get(name, [])] or [None]
        for i, path in enumerate(paths):
            cases.append(pytest.param(Case(name, path), id=f"{name}:{path.stem if path else 'no-track'}",
                                      marks=[pytest.mark.slow] if i or name in HEAVY_TASKS else []))
    return cases


@pytest.fixture(scope="module", params=_cases())
def case(request: pytest.FixtureRequest) -> Case:
    c: Case = request.param
    if c.path is None:
        pytest.fail(f"task {c.task!r} has no track with a {PROFILE!r} profile (benchmarks/*.yaml with "
                    f"'task: {c.task}'): the contract suite cannot check it; add one")
    return c


@pytest.fixture(scope="module")
def task(case: Case) -> Task:
    return get_task(case.task)


@pytest.fixture(scope="module")
def track(case: Case, task: Task) -> Track:
    assert case.path is not None
    # per-profile values (a detect track's tile size) resolved as simulate_release and the harness resolve them
    return task.track_model.model_validate(yaml.safe_load(case.path.read_text())).for_profile(PROFILE)


@pytest.fixture(scope="module")
def release(track: Track, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("contract") / track.name
    return simulate_release(track, out, profile=PROFILE, seed=SEED, size=SIZE, progress=False, workers=1,
                            backend=BACKEND)


@pytest.fixture(scope="module")
def real_release(track: Track, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in for the track's real set: another small simulated release (its hidden test split is the truth)."""
    out = tmp_path_factory.mktemp("contract-real") / track.name
    return simulate_release(track, out, profile=PROFILE, seed=SEED + 1, size=REAL_SIZE, progress=False, workers=1,
                            backend=BACKEND)


@pytest.fixture(scope="module")
def truth(release: Path) -> HiddenSplit:
    return open_release(release).hidden("test")


@pytest.fixture(scope="module")
def oracle(task: Task, track: Track, release: Path, truth: HiddenSplit) -> tuple[np.ndarray, np.ndarray]:
    """(ids, the oracle's predictions) of the test split, in the order of the public test index."""
    ids = open_release(release).meta("test")["id"].to_numpy()
    return ids, np.asarray(task.oracle(track, truth, ids))


@pytest.fixture(scope="module")
def oracle_metrics(task: Task, track: Track, truth: HiddenSplit, oracle: tuple[np.ndarray, np.ndarray],
                   tmp_path_factory: pytest.TempPathFactory) -> dict[str, float]:
    """The scorer's metrics of the oracle's predictions."""
    ids, pred = oracle
    return task.score(track, ids, pred, truth, tmp_path_factory.mktemp("oracle-score"))


def _worse(value: float, than: float, higher_is_better: bool) -> bool:
    return value < than if higher_is_better else value > than


def _derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A random permutation that moves every object (no object keeps its own prediction)."""
    perm = rng.permutation(n)
    return np.roll(perm, 1)[np.argsort(perm)]


# --------------------------------------------------------------------------------------------- the task itself


def test_task_declares_its_track_model_and_output_kind(case: Case, task: Task, track: Track) -> None:
    assert task.name == case.task
    assert isinstance(track, task.track_model) and track.task == task.name
    assert track.output.kind in task.output_kinds, \
        f"track {track.name!r} declares output kind {track.output.kind!r}; {task.name!r} allows {task.output_kinds}"
    sim = task.simulator()
    assert set(sim.arrays(track)), "the simulator declares no per-object array"
    assert set(sim.hidden_arrays) <= set(sim.arrays(track))


# --------------------------------------------------------------------------------------------- the release


def test_same_seed_gives_byte_identical_releases_whatever_the_chunks_and_workers(
        track: Track, release: Path, tmp_path: Path) -> None:
    other = simulate_release(track, tmp_path / "other", profile=PROFILE, seed=SEED, size=SIZE, progress=False,
                             workers=2, chunk_size=5, backend=BACKEND)
    a, b = (json.loads((r / "manifest.json").read_text()) for r in (release, other))
    differ = sorted(f for f in a["files"].keys() | b["files"].keys()
                    if a["files"].get(f, {}).get("sha256") != b["files"].get(f, {}).get("sha256"))
    assert not differ, f"files that differ between chunk_size 32 / 1 worker and chunk_size 5 / 2 workers: {differ}"
    assert a == b
    assert a["counts"]["test"] == min(SIZE, a.get("split_limits", {}).get("test", SIZE))  # injected: its cut-outs
    assert all(a["counts"][s] > 0 for s in ("train", "val"))


def test_hidden_columns_and_arrays_never_reach_the_public_test_split(task: Task, release: Path) -> None:
    rel: Release = open_release(release)
    sim = task.simulator()
    hidden = rel.hidden("test")
    hidden_meta = hidden.meta()
    public_index = rel.meta("test")
    n = rel.manifest["counts"]["test"]
    assert sorted(public_index["id"]) == sorted(hidden_meta["id"]) and len(public_index) == n
    leaked = (set(public_index.columns) & set(hidden_meta.columns)) - {"id"}
    assert not leaked, f"hidden columns in the public test split: {sorted(leaked)}"
    assert set(sim.label_columns) <= set(hidden_meta.columns)
    assert set(sim.label_columns) <= set(rel.meta("train").columns), "the training split must carry its labels"
    assert list(rel.manifest["hidden_arrays"]) == list(sim.hidden_arrays)
    # a task's per-object tables (the objects of each detection tile): hidden for test, public for train/val
    assert list(rel.manifest.get("tables", [])) == list(getattr(sim, "tables", ()))
    for name in rel.manifest.get("tables", []):
        assert set(hidden.table(name).columns) and len(rel.table("train", name)) > 0
        with pytest.raises(PermissionError):
            rel.table("test", name)
    test_dir = layout.public_dir(release, "test")
    public_files = {p.name for p in test_dir.iterdir()}
    expected = {layout.index_path(test_dir).name} | {p.name for a in rel.public_arrays("test")
                                                     for p in layout.shard_paths(test_dir, a)}
    assert public_files == expected, f"the public test folder holds more than the inputs and their ids: " \
        f"{sorted(public_files - expected)}"

    public: dict[str, np.ndarray] = {}
    for name in rel.manifest["arrays"]:
        if name in sim.hidden_arrays:
            with pytest.raises(FileNotFoundError):
                rel.array("test", name)
            assert len(hidden.array(name)) == n
            assert len(rel.array("train", name)) == rel.manifest["counts"]["train"]  # a training target
        else:
            public[name] = np.asarray(rel.array("test", name))
            assert len(public[name]) == n
    assert public, "the public test split holds no input array"
    # No public array is a hidden one, nor holds a label column's values (e.g. a feature that is the label).
    order = hidden_meta.set_index("id").index.get_indexer(public_index["id"])
    for h in sim.hidden_arrays:
        answer = np.asarray(hidden.array(h))[order]
        for name, values in public.items():
            assert values.shape != answer.shape or not np.allclose(values, answer), f"public {name} == hidden {h}"
    for column in sim.label_columns:
        if hidden_meta[column].dtype.kind not in "biuf":
            continue
        label = hidden_meta[column].to_numpy(np.float64)[order]
        if np.ptp(label) == 0:  # a constant: nothing to hide
            continue
        for name, values in public.items():
            flat = values.reshape(n, -1).astype(np.float64)
            same = np.all(np.isclose(flat, label[:, None], rtol=1e-6, atol=0), axis=0)
            assert not same.any(), f"public {name} holds the label {column!r} (element {int(np.argmax(same))})"


# --------------------------------------------------------------------------------------------- the scorer


def test_oracle_scores_best_and_shuffled_predictions_score_near_chance(
        task: Task, track: Track, truth: HiddenSplit, oracle: tuple[np.ndarray, np.ndarray],
        oracle_metrics: dict[str, float], tmp_path: Path) -> None:
    ids, pred = oracle
    primary, higher = track.metrics.primary, track.metrics.higher_is_better
    best = oracle_metrics
    assert primary in best, f"the scorer does not return the track's primary metric {primary!r}: {sorted(best)}"
    assert all(isinstance(k, str) and isinstance(v, (int, float)) for k, v in best.items()), best
    assert not math.isnan(best[primary])
    if primary in IDEAL:
        assert best[primary] == pytest.approx(IDEAL[primary], abs=1e-6), f"oracle's {primary}: {best[primary]}"

    rng = np.random.default_rng(0)
    perm = rng.permutation(len(ids))  # the same predictions in another order, with their ids: the same score
    again = task.score(track, ids[perm], pred[perm], truth, tmp_path / "reordered")
    assert again[primary] == pytest.approx(best[primary], rel=1e-9, abs=1e-12), "the scorer depends on the order"

    if not task.paired:  # a generative task scores the set of predictions: shuffling them changes nothing
        return
    shuffled = []
    for k in range(SHUFFLES):
        value = task.score(track, ids, pred[_derangement(len(ids), rng)], truth, tmp_path / f"shuffled{k}")[primary]
        assert _worse(value, best[primary], higher), \
            f"shuffled oracle predictions get {primary} {value}, not worse than the oracle's {best[primary]}"
        shuffled.append(value)
    if primary in CHANCE:
        level, tolerance = CHANCE[primary]
        assert abs(np.mean(shuffled) - level) < tolerance, f"{primary} of shuffled predictions: {shuffled}"


def test_score_resamples_gives_the_scorers_primary_metric_of_each_resample(
        task: Task, track: Track, truth: HiddenSplit, oracle: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    ids, pred = oracle
    rng = np.random.default_rng(1)
    pred = np.asarray(pred, np.float64)
    noisy = pred + rng.normal(0, 0.3 * (np.std(pred) or 1.0), pred.shape)  # imperfect: ties and ranks matter
    if pred.ndim == 2 and track.output.kind == "pdf":  # a PDF track's oracle is a point estimate: keep that
        noisy = pred
    if track.output.kind == "detections":  # candidates stay in the tile, NaN padding stays padding: noisy scores
        noisy = pred.copy()
        noisy[..., 2] += rng.normal(0, 0.3, pred.shape[:2])
    primary = track.metrics.primary
    draws = rng.integers(0, len(ids), size=(3, len(ids)))
    indices = np.vstack([np.arange(len(ids)), draws])
    got = np.asarray(task.score_resamples(track, ids, noisy, truth, indices))
    assert got.shape == (4,), f"score_resamples returned shape {got.shape} for 4 resamples"
    # A repeated object counts as often as it is drawn. An unpaired (generative) task scores a resample of the
    # predictions against the truth of all of ``ids`` (the part ranked), which score() of the resample's ids alone
    # does not see: there only the identity resample must match, and the others must be resamples.
    for r, rows in enumerate(indices if task.paired else indices[:1]):
        want = task.score(track, ids[rows], noisy[rows], truth, tmp_path / f"r{r}")[primary]
        assert got[r] == pytest.approx(want, rel=1e-9, abs=1e-12), f"resample {r}: {got[r]} != score's {want}"
    if not task.paired:
        assert np.isfinite(got).all() and len(np.unique(got)) == len(got), got


def test_interval_metrics_come_with_their_interval(task: Task, track: Track, truth: HiddenSplit,
                                                   oracle: tuple[np.ndarray, np.ndarray]) -> None:
    """What the leaderboard shows with an interval (Task.interval_metrics) the scorer reports with one."""
    ids, pred = oracle
    metrics = task.score(track, ids, np.asarray(pred), truth, None)
    for m in task.interval_metrics(track):
        assert metrics[f"{m}_ci_low"] <= metrics[m] <= metrics[f"{m}_ci_high"], m


def test_score_without_out_dir_gives_the_same_metrics_and_writes_nothing(
        task: Task, track: Track, truth: HiddenSplit, oracle: tuple[np.ndarray, np.ndarray], real_release: Path,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """out_dir None (the harness's public and private part scorings): the metrics only, identical, no file."""
    monkeypatch.chdir(tmp_path)  # a relative path written by mistake would land here
    ids, pred = oracle
    noisy = np.asarray(pred)
    with_files = task.score(track, ids, noisy, truth, tmp_path / "with")
    assert with_files == pytest.approx(task.score(track, ids, noisy, truth, None), nan_ok=True)
    real_truth = open_release(real_release).hidden("test")
    real_ids = open_release(real_release).meta("test")["id"].to_numpy()
    real_pred = np.asarray(task.oracle(track, real_truth, real_ids))
    real = task.score_real(track, ids, noisy, truth, real_ids, real_pred, real_truth, tmp_path / "with")
    assert real == pytest.approx(task.score_real(track, ids, noisy, truth, real_ids, real_pred, real_truth, None),
                                 nan_ok=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["with"]


def test_score_real_works_on_a_small_real_set(task: Task, track: Track, truth: HiddenSplit,
                                              oracle: tuple[np.ndarray, np.ndarray],
                                              oracle_metrics: dict[str, float], real_release: Path,
                                              tmp_path: Path) -> None:
    ids, pred = oracle
    real_truth = open_release(real_release).hidden("test")
    real_ids = open_release(real_release).meta("test")["id"].to_numpy()
    real_pred = np.asarray(task.oracle(track, real_truth, real_ids))
    metrics = task.score_real(track, ids, pred, truth, real_ids, real_pred, real_truth, tmp_path)
    assert metrics, "score_real returned no metric"
    assert all(isinstance(k, str) and isinstance(v, (int, float)) and not math.isnan(v) for k, v in metrics.items()), \
        metrics
    clash = set(metrics) & set(oracle_metrics)  # evaluate merges both into one record
    assert not clash, f"score_real returns metrics named as the simulated test set's: {sorted(clash)}"
    primary = track.metrics.primary
    if primary in IDEAL:  # the real set's truth is the oracle's: a perfect score, not only a number
        assert f"real_{primary}" in metrics, f"score_real does not return real_{primary}: {sorted(metrics)}"
        assert metrics[f"real_{primary}"] == pytest.approx(IDEAL[primary], abs=1e-6), \
            f"oracle's real_{primary}: {metrics[f'real_{primary}']}"


def test_public_artifacts_are_files_participants_are_shown(task: Task, track: Track, truth: HiddenSplit,
                                                           oracle: tuple[np.ndarray, np.ndarray],
                                                           tmp_path: Path) -> None:
    ids, pred = oracle
    half = len(ids) // 2  # the public part when the test set is split into public and private parts
    assert task.public_artifacts(track, ids[:half], pred[:half], truth, tmp_path) is None
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if not p.is_dir())
    unlisted = set(written) - set(participant_artifacts(track))
    assert not unlisted, f"public_artifacts wrote files that skybench.harness.visibility never shows: {unlisted}"


def test_stream_artifacts_are_files_participants_are_shown(task: Task, track: Track, release: Path,
                                                           oracle: tuple[np.ndarray, np.ndarray],
                                                           tmp_path: Path) -> None:
    """``stream_artifacts`` gets the published stream and the outputs only (no hidden split): what it writes
    must be on the participant allow-list."""
    ids, pred = oracle
    assert task.stream_artifacts(track, ids, pred, layout.public_dir(release, "test"), tmp_path) is None
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if not p.is_dir())
    unlisted = set(written) - set(participant_artifacts(track))
    assert not unlisted, f"stream_artifacts wrote files that skybench.harness.visibility never shows: {unlisted}"


# --------------------------------------------------------------------------------------------- the output kind


def test_output_kind_accepts_the_oracle_and_rejects_bad_outputs_with_one_line(
        track: Track, oracle: tuple[np.ndarray, np.ndarray]) -> None:
    ids, pred = oracle
    n, shape = len(ids), _input_shape(track)
    good = expected_shapes(track.output, n, shape)
    for ok in (pred, pred.astype(np.float32)):
        assert validate_predictions(ok, n, track.output, shape) == ""
    bad = {"one fewer": pred[:-1], "one more": np.concatenate([pred, pred[:1]]),
           "an extra axis": np.stack([pred, pred], axis=-1), "all in one row": pred.reshape(1, -1),
           "a scalar": np.asarray(pred.reshape(-1)[0])}
    for what, wrong in bad.items():
        if tuple(wrong.shape) in good:
            continue
        reason = validate_predictions(wrong, n, track.output, shape)
        assert reason and "\n" not in reason and len(reason) <= MAX_MESSAGE, f"{what} {wrong.shape}: {reason!r}"
        assert str(n) in reason, f"{what}: the reason does not say what is expected: {reason!r}"
    finite = np.flatnonzero(np.isfinite(pred))  # a value the oracle gives (a detections oracle pads with NaN)
    for value, word in ((np.nan, "NaN"), (np.inf, "inf"), (-np.inf, "inf")):
        wrong = pred.astype(np.float64).copy()
        wrong.flat[finite[len(finite) // 2]] = value
        reason = validate_predictions(wrong, n, track.output, shape)
        assert reason and "\n" not in reason and word in reason, f"{value}: {reason!r}"
    reason = validate_predictions(pred.astype(str), n, track.output, shape)
    assert reason and "\n" not in reason
