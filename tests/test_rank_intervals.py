"""Rank intervals, tie groups and ``skybench compare`` (skybench.tracking.ranks), against a real sqlite MLflow
store, a small simulated lens release and scikit-learn's AUROC as the reference."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from skybench import tracking
from skybench.release import release_digest
from skybench.release.reader import open_release
from skybench.tasks.lens.metrics import roc_resamples
from skybench.tracking import ranks
from skybench.tracking.leaderboard import find_entry, finished_entries, leaderboard, render, write_results
from skybench.tracks import Track, load_track


@pytest.fixture(scope="module")
def track() -> Track:
    t = load_track("lens-space")  # the whole test set ranks (a 64-object release has too few for a 30% part)
    return t.model_copy(update={"evaluation": t.evaluation.model_copy(update={"public_fraction": None,
                                                                              "rank_resamples": 400})})


def _truth(release: Path) -> pd.DataFrame:
    return open_release(release).hidden("test").meta(["id", "is_lens"]).sort_values("id")


def _submit(track: Track, release: Path, tmp: Path, team: str, name: str, scores: np.ndarray,
            participant: bool = False) -> str:
    """Log one FINISHED evaluation as evaluate + log do: the organiser run with its saved predictions."""
    truth = _truth(release)
    folder = tmp / f"{team}-{name}"
    folder.mkdir()
    order = np.random.default_rng(len(name)).permutation(len(truth))  # saved in another order than the truth's
    pd.DataFrame({"id": truth["id"].to_numpy()[order], "score": scores[order]}).to_csv(folder / "predictions.csv",
                                                                                      index=False)
    metrics = {"auroc": float(roc_auc_score(truth["is_lens"], scores))}
    tags = {"submission_sha256": f"{team}-{name}".ljust(64, "0"), "release_sha256": release_digest(release)}
    time.sleep(0.005)  # distinct start times
    run = tracking.log_evaluation(track.name, team=team, name=name, fmt="csv", status="FINISHED", metrics=metrics,
                                  tags=tags, artifacts=[folder / "predictions.csv"],
                                  experiment=tracking.organiser_experiment(track.name))
    if participant:
        tracking.log_evaluation(track.name, team=team, name=name, fmt="csv", status="FINISHED", metrics=metrics,
                                tags=tags)
    return run


@pytest.fixture
def entries(store: str, track: Track, tiny_space_release: Path, tmp_path: Path) -> dict[str, np.ndarray]:
    """copy-a and copy-b: one prediction file twice; good: the labels plus small noise; weak, random: worse."""
    y = _truth(tiny_space_release)["is_lens"].to_numpy().astype(float)
    rng = np.random.default_rng(7)
    noisy = y + rng.normal(0, 0.8, y.size)
    scores = {"good": y + rng.normal(0, 0.05, y.size), "copy-a": noisy, "copy-b": noisy.copy(),
              "weak": y + rng.normal(0, 1.5, y.size), "random": rng.normal(0, 1, y.size)}
    for name, s in scores.items():
        _submit(track, tiny_space_release, tmp_path, "t", name, s, participant=name == "good")
    return scores


def test_auroc_of_each_resample_equals_sklearn() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = np.round(y + rng.normal(0, 1, 300), 1)  # ties within and across classes
    idx = rng.integers(0, 300, size=(50, 300))
    got = roc_resamples(y, s, idx, ("auroc",), chunk_elements=3000)["auroc"]  # several chunks
    want = [roc_auc_score(y[i], s[i]) for i in idx]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert np.isnan(roc_resamples(y, s, np.zeros((1, 300), int))["auroc"])[0]  # one object drawn: one class only


def test_groups_follow_overlap_with_each_group_head() -> None:
    # intervals [1,2] [1,3] [3,4] [4,5] [6,6]: A = {0, 1}; head of B is 2, which overlaps 3; C = {4}
    assert ranks.groups([1, 1, 3, 4, 6], [2, 3, 4, 5, 6], range(5)) == ["A", "A", "B", "B", "C"]
    assert ranks.groups([1] * 3, [1] * 3, [0, 1, 2]) == ["A"] * 3
    assert [ranks._letter(k) for k in (0, 25, 26, 27)] == ["A", "Z", "AA", "AB"]


def test_identical_predictions_tie_and_a_clearly_better_entry_is_alone_in_group_a(
        track: Track, tiny_space_release: Path, entries: dict[str, np.ndarray]) -> None:
    board = leaderboard(track, release=tiny_space_release).set_index("name")
    assert {"rank", "rank_low", "rank_high", "group"} <= set(board.columns)
    assert board.loc["good", "rank"] == 1
    assert (board.loc["good", "rank_low"], board.loc["good", "rank_high"]) == (1, 1)
    assert board.loc["good", "group"] == "A"
    assert (board["group"] == "A").sum() == 1, board[["rank", "rank_low", "rank_high", "group"]]
    a, b = board.loc["copy-a"], board.loc["copy-b"]
    assert abs(int(a["rank"]) - int(b["rank"])) == 1  # the point ranking still orders them (by submission time)
    assert (a["rank_low"], a["rank_high"], a["group"]) == (b["rank_low"], b["rank_high"], b["group"])
    assert board.loc["random", "rank_low"] >= board.loc["copy-a", "rank_low"]
    # every form shows the columns
    for fmt in ("table", "markdown", "csv", "html"):
        text = render(leaderboard(track, release=tiny_space_release), fmt)  # type: ignore[arg-type]
        assert all(c in text for c in ("rank_low", "rank_high", "group")), fmt
    # no release: the columns are there, empty
    plain = leaderboard(track)
    assert plain["rank_low"].isna().all() and (plain["group"] == "").all()


@pytest.mark.slow
def test_rank_intervals_are_deterministic_and_follow_the_seed(
        track: Track, tiny_space_release: Path, entries: dict[str, np.ndarray]) -> None:
    cols = ["name", "rank_low", "rank_high", "group"]
    first = leaderboard(track, release=tiny_space_release)[cols]
    pd.testing.assert_frame_equal(first, leaderboard(track, release=tiny_space_release)[cols])
    hidden = open_release(tiny_space_release).hidden("test")
    pred = {k: (_truth(tiny_space_release)["id"].to_numpy(), v) for k, v in entries.items()}
    _, v1 = ranks.primary_resamples(track, hidden, pred)
    other = track.model_copy(update={"evaluation": track.evaluation.model_copy(update={"rank_seed": 1})})
    _, v2 = ranks.primary_resamples(other, hidden, pred)
    assert v1.shape == (5, 400) and not np.array_equal(v1, v2)
    np.testing.assert_array_equal(v1, ranks.primary_resamples(track, hidden, pred)[1])


@pytest.mark.slow
def test_compare_gives_the_paired_difference_interval_and_p_value(
        track: Track, tiny_space_release: Path, entries: dict[str, np.ndarray]) -> None:
    truth = _truth(tiny_space_release)
    ids, y = truth["id"].to_numpy(), truth["is_lens"].to_numpy()
    hidden = open_release(tiny_space_release).hidden("test")
    res = ranks.compare(track, hidden, ("good", (ids, entries["good"])), ("random", (ids, entries["random"])))
    want = roc_auc_score(y, entries["good"]) - roc_auc_score(y, entries["random"])
    assert res.difference == pytest.approx(want, abs=1e-12)
    idx = ranks.resample_indices(len(ids), 400, 0)  # the same draws, by hand with sklearn
    d = [roc_auc_score(y[i], entries["good"][i]) - roc_auc_score(y[i], entries["random"][i]) for i in idx]
    assert (res.ci_low, res.ci_high) == pytest.approx(tuple(np.quantile(d, [0.025, 0.975])), abs=1e-12)
    assert res.ci_low > 0 and res.p_value == pytest.approx(2 / 401)  # never below: every resample favours good
    assert "good is better" in res.summary(True)

    same = ranks.compare(track, hidden, ("copy-a", (ids, entries["copy-a"])), ("copy-b", (ids, entries["copy-b"])))
    assert (same.difference, same.ci_low, same.ci_high, same.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_compare_command_names_entries_and_refuses_unknown_ones(
        track: Track, tiny_space_release: Path, entries: dict[str, np.ndarray],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from skybench import cli

    monkeypatch.setattr("skybench.tracks.load_track", lambda name: track)
    run = CliRunner().invoke(cli.app, ["compare", "lens-space", "t/good", "weak", "--release",
                                       str(tiny_space_release)])
    assert run.exit_code == 0, run.output
    assert "auroc" in run.output and "t/good - t/weak" in run.output and "p =" in run.output
    bad = CliRunner().invoke(cli.app, ["compare", "lens-space", "t/good", "nobody", "--release",
                                       str(tiny_space_release)])
    assert bad.exit_code == 1
    assert "no FINISHED entry 'nobody'" in bad.output and "t/copy-a" in bad.output
    with pytest.raises(LookupError, match="give team/name"):
        find_entry(pd.DataFrame({"team": ["x", "y"], "name": ["m", "m"], "run_id": ["1", "2"]}), "m", "lens-space")
    assert finished_entries(track)["name"].iloc[0] == "good"


def test_write_results_puts_ranks_in_metrics_json_and_mlflow_tags(
        track: Track, tiny_space_release: Path, entries: dict[str, np.ndarray], tmp_path: Path) -> None:
    write_results(track, tmp_path / "out", release=tiny_space_release)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["t/good"] | {"auroc": 0} == {"rank": 1, "rank_low": 1, "rank_high": 1, "group": "A", "auroc": 0}
    assert metrics["t/copy-a"]["rank_low"] == metrics["t/copy-b"]["rank_low"]
    c = MlflowClient()
    for experiment in (tracking.organiser_experiment(track.name), tracking.experiment_name(track.name)):
        exp = c.get_experiment_by_name(experiment)
        assert exp is not None
        good = c.search_runs([exp.experiment_id], "params.name = 'good'")[0]
        assert {k: good.data.tags.get(k) for k in ("rank", "rank_low", "rank_high", "group")} == \
            {"rank": "1", "rank_low": "1", "rank_high": "1", "group": "A"}, experiment


def test_the_ranked_part_is_the_public_part_while_open_and_the_private_part_once_closed(
        track: Track, tiny_space_release: Path) -> None:
    from skybench.harness.score import public_mask

    hidden = open_release(tiny_space_release).hidden("test")
    every = np.sort(hidden.ids())
    split = track.evaluation.model_copy(update={"public_fraction": 0.3, "split_seed": 2026})
    parts = {phase: ranks.part_ids(track.model_copy(update={"evaluation": split.model_copy(update={"phase": phase})}),
                                   hidden) for phase in ("open", "closed")}
    np.testing.assert_array_equal(parts["open"], every[public_mask(every, every, 0.3, 2026)])
    np.testing.assert_array_equal(np.sort(np.concatenate([parts["open"], parts["closed"]])), every)
    assert len(parts["open"]) == round(0.3 * len(every))
    np.testing.assert_array_equal(ranks.part_ids(track, hidden), every)  # no split: the whole test set


def test_an_entry_without_saved_predictions_leaves_the_intervals_empty_with_a_warning(
        store: str, track: Track, tiny_space_release: Path) -> None:
    tracking.log_evaluation(track.name, team="t", name="bare", fmt="csv", status="FINISHED", metrics={"auroc": 0.7},
                            tags={"submission_sha256": "b" * 64, "release_sha256": release_digest(tiny_space_release)},
                            experiment=tracking.organiser_experiment(track.name))
    with pytest.warns(UserWarning, match="no rank intervals: .*no saved predictions"):
        board = leaderboard(track, release=tiny_space_release)
    assert board["rank"].tolist() == [1] and board["rank_low"].isna().all() and board["group"].tolist() == [""]


def test_the_intervals_are_computed_once_per_board_and_again_when_its_entries_change(
        track: Track, tiny_space_release: Path, entries: dict[str, np.ndarray], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # `skybench leaderboard --write` ranks the same board three times (write_results, the UI names, the print)
    cols = ["name", "rank_low", "rank_high", "group"]
    first = leaderboard(track, release=tiny_space_release)[cols]
    calls = []
    real = ranks.primary_resamples
    monkeypatch.setattr(ranks, "primary_resamples", lambda *a, **k: calls.append(1) or real(*a, **k))
    pd.testing.assert_frame_equal(leaderboard(track, release=tiny_space_release)[cols], first)
    write_results(track, tmp_path / "out", release=tiny_space_release)
    assert calls == []
    y = _truth(tiny_space_release)["is_lens"].to_numpy().astype(float)
    _submit(track, tiny_space_release, tmp_path, "t", "late", y)  # a new entry: a new board, new intervals
    board = leaderboard(track, release=tiny_space_release).set_index("name")
    assert calls == [1] and board.loc["late", "group"] == "A"
    other = track.model_copy(update={"evaluation": track.evaluation.model_copy(update={"rank_seed": 1})})
    leaderboard(other, release=tiny_space_release)  # another bootstrap seed: recomputed
    assert calls == [1, 1]
