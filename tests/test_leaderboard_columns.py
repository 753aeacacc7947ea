"""The terminal leaderboard: each track's default columns, --columns, --all; markdown and CSV keep every column."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest
from helpers import mlflow_store
from typer.testing import CliRunner

from skybench import tracking
from skybench.cli import app
from skybench.tracking import leaderboard as lb
from skybench.tracks import list_tracks, load_track

METRICS = {"psnr": 31.123456, "psnr_ci_low": 30.987654, "psnr_ci_high": 31.234567, "ssim": 0.912345,
           "psnr_flux": 40.5, "flux_rel_error": 0.012345, "flux_bias": -0.001, "size_rel_error": 0.05,
           "ellipticity_error": 0.02, "chi2": 1.234567, "real_psnr": 29.5, "real_ssim": 0.88, "real_psnr_flux": 38.0,
           "real_flux_rel_error": 0.02, "real_size_rel_error": 0.07, "real_ellipticity_error": 0.03,
           "real_chi2": 1.5}


@pytest.fixture
def enhance_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The enhance demo's entries (the three baselines, a do-nothing example, a failing team) in a real store
    (the same values for the whole test set and its public part, which the open phase shows)."""
    uri = mlflow_store(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    entries = [("baselines", "richardson-lucy", 0.0), ("baselines", "autoencoder", 1.5), ("baselines", "gan", 2.2),
               ("examples", "identity-predictions", -3.0), ("a-rather-long-team-name", "my-best-model-v2", None)]
    for team, name, shift in entries:
        time.sleep(0.005)
        tracking.log_evaluation(
            "enhance", team=team, name=name, fmt="torch-export", status="FAILED" if shift is None else "FINISHED",
            metrics={} if shift is None else {f"{part}{k}": v + shift if k.startswith("psnr") else v
                                              for k, v in METRICS.items() for part in ("", "public_")},
            tags={"submission_sha256": f"{team}{name}".ljust(64, "0"), "release_sha256": "r" * 64, "device": "cpu"},
            reason="" if shift is not None else "the model's output has shape (64, 3, 64, 64) but the track needs "
                                                "(64, 3, 64, 64) float32 values; got float64 NaN in 12 images")
    return uri


def _width(text: str) -> int:
    return max(len(line) for line in text.splitlines())


@pytest.mark.slow
def test_enhance_leaderboard_fits_in_120_columns(enhance_store: str) -> None:
    result = CliRunner().invoke(app, ["leaderboard", "enhance", "--all-releases"])
    assert result.exit_code == 0, result.output
    table = result.output.split("\nFAILED ")[0]
    assert _width(table) <= 120, table
    head = table.splitlines()[1]
    for col in ("rank", "team", "name", "status", "psnr", "psnr_ci", "ssim", "chi2"):
        assert f" {col} " in head, head
    assert "[30.9877, 31.2346]" in table  # the primary's interval in one cell
    assert "real_psnr" not in table and "submitted" not in table
    # the failure reason the table leaves out follows it, one line per failed entry
    assert "FAILED a-rather-long-team-name/my-best-model-v2: the model's output has shape" in result.output

    everything = CliRunner().invoke(app, ["leaderboard", "enhance", "--all-releases", "--all"])
    assert everything.exit_code == 0 and _width(everything.output) > 120  # what the default saves
    for col in lb.columns(load_track("enhance")):
        assert f" {col} " in everything.output.splitlines()[1]


def test_columns_option_and_unknown_column(enhance_store: str) -> None:
    result = CliRunner().invoke(app, ["leaderboard", "enhance", "--all-releases",
                                      "--columns", "name,real_chi2,psnr_ci"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1].split() == ["┃", "name", "┃", "real_chi2", "┃", "psnr_ci", "┃"]

    bad = CliRunner().invoke(app, ["leaderboard", "enhance", "--all-releases", "--columns", "psnr,sharpness"])
    assert bad.exit_code == 1
    lines = bad.output.strip().splitlines()
    assert len(lines) == 1 and "unknown column(s) sharpness" in lines[0]
    assert "known: rank, rank_low, rank_high, group, team, name, status, psnr" in lines[0] and "psnr_ci" in lines[0]
    empty = CliRunner().invoke(app, ["leaderboard", "enhance", "--all-releases", "--columns", " , "])
    assert empty.exit_code == 1 and "no column chosen for enhance; known: rank" in empty.output


@pytest.mark.slow
def test_markdown_and_csv_keep_every_column(enhance_store: str) -> None:
    cols = lb.columns(load_track("enhance"))
    md = CliRunner().invoke(app, ["leaderboard", "enhance", "--all-releases", "--format", "markdown"])
    assert md.exit_code == 0 and md.output.splitlines()[0] == "| " + " | ".join(cols) + " |"
    csv = CliRunner().invoke(app, ["leaderboard", "enhance", "--all-releases", "--format", "csv"])
    assert csv.exit_code == 0 and csv.output.splitlines()[0] == ",".join(cols)
    bad = CliRunner().invoke(app, ["leaderboard", "enhance", "--all-releases", "--format", "csv", "--all"])
    assert bad.exit_code == 1 and "keeps every column" in bad.output


def test_default_columns_tolerate_a_missing_group_and_show_it_when_present() -> None:
    t = load_track("enhance")
    board = pd.DataFrame({c: [1.0] for c in lb.columns(t) if c != "group"})  # a board without rank intervals
    assert "group" not in lb.terminal_view(t, board).columns
    board.insert(1, "group", ["A"])
    view = lb.terminal_view(t, board)
    assert list(view.columns) == lb.default_columns(t) and view["group"].tolist() == ["A"]
    # with the group column and team-chosen names of any length, still within 120 columns
    board[["team", "name", "status", "rank"]] = ["t" * 300, "n" * 300, "FINISHED", 999]
    board[["psnr", "psnr_ci_low", "psnr_ci_high"]] = [-12.345678, -13.0, -11.0]  # garbage outputs
    text = lb.render(lb.terminal_view(t, board), "table")
    assert _width(text) <= 120, text
    assert "'" + "t" * 12 + "\u2026" in text and "'" + "n" * 18 + "\u2026" in text  # not slugs: quoted
    assert "t" * 300 in lb.render(lb.terminal_view(t, board, all_columns=True), "table")  # --all: uncut


def test_a_name_that_is_not_a_slug_is_never_shown_as_one() -> None:
    """Refused folders named ``alice `` (a trailing space), ``alice\\n`` or ``alice\\u3000`` printed exactly as
    ``alice`` in leaderboard.md and the terminal, beside alice's own entry; and two long names that differ only
    past the cut printed alike in the terminal. Entry names are slugs: anything else is shown quoted, escaped."""
    t = load_track("enhance")
    teams = ["alice", "alice ", "alice\n", "alice\u3000", "bob-" + "x" * 40 + "1", "bob-" + "x" * 40 + "2"]
    board = pd.DataFrame({c: [1.0] * len(teams) for c in lb.columns(t)})
    board[["team", "name", "status"]] = [[team, "resnet", "FINISHED"] for team in teams]
    for text in (lb.render(board, "markdown"), lb.render(lb.terminal_view(t, board), "table")):
        cells = [c.strip() for line in text.splitlines() for c in line.replace("\u2502", "|").split("|")]
        assert cells.count("alice") == 1, text
    view = lb.terminal_view(t, board)
    assert view["team"].tolist()[:4] == ["alice", "'alice '", "'alice\\n'", "'alice\\u3000'"]
    assert view["team"].tolist()[4:] == teams[4:], "cut, they would read alike: shown whole"
    assert lb.terminal_view(t, board.iloc[:5])["team"].tolist()[4] == "bob-" + "x" * 9 + "\u2026"


@pytest.mark.parametrize("name", list_tracks())
def test_every_track_declares_known_default_columns(name: str) -> None:
    t = load_track(name)
    assert t.leaderboard is not None, f"{name}: no leaderboard.columns"
    board = pd.DataFrame(columns=[*lb.columns(t), "group"])
    cols = t.leaderboard.columns
    assert not set(cols) - set(lb.known_columns(board)), name
    assert cols[:5] == ["rank", "group", "team", "name", "status"] and t.metrics.primary in cols
    assert f"{t.metrics.primary}_ci" in cols and 2 <= len(cols) - 7 <= 3  # two or three key metrics


@pytest.mark.parametrize("args", [["leaderboard", "lens-spce"], ["compare", "lens-spce", "a", "b"],
                                  ["log", "results/lens-space/evaluations", "--track", "lens-spce"]])
def test_a_mistyped_track_is_one_line_naming_the_known_ones(args: list[str], tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """leaderboard, compare and log loaded the track outside their error handling: a typo was a traceback."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output
    assert r.output.startswith("error: no track definition") and "known tracks: " in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1 and "lens-space" in r.output
