"""The MLflow UI as a leaderboard (``skybench ui``).

MLflow 3's UI opens an experiment on the GenAI "Overview" of traces unless the experiment's kind tag
(:data:`EXPERIMENT_KIND_TAG`, the tag the UI itself sets when one picks "Model training") says otherwise; and its
runs table shows the run name first, the metrics far to the right. So:

* every skybench experiment is tagged a model-training experiment (:func:`mark_model_training`; new ones at
  creation, in :func:`skybench.tracking.ensure_experiment`);
* each evaluation run on the leaderboard is named ``<rank> <group> <primary>=<value> <team>/<name>`` and tagged
  ``rank``, ``group`` (the tags :func:`skybench.tracking.leaderboard.tag_ranks` writes) and
  ``skybench.leaderboard`` = ``yes`` (:func:`annotate_runs`); a run that left the leaderboard (superseded, or of
  another release) gets back its plain ``<team>/<name>`` and loses them;
* :func:`runs_url` is the runs view of one experiment with the shared view :func:`share_view` stores in the
  experiment (the UI's ``viewStateShareKey``): leaderboard runs only, sorted by the ranked metric (the UI's
  ``searchFilter``, ``orderByKey``, ``orderByAsc``), and the primary metric, its interval, the track's key metrics,
  rank and group as the columns right after the run name (the runs table's column choice is not a URL
  parameter). Not ``workflowType=machine_learning``: MLflow 3.17's "Model training" runs page ignores shared
  views (its columns live in the browser's storage), so the link opens the runs page of the default workflow
  ("Training runs"), which applies them.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterable

import pandas as pd
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from skybench.tracking import (
    EXPERIMENT_KIND_TAG,
    KIND_TAG,
    MODEL_TRAINING,
    client,
    experiment_name,
    organiser_experiment,
    run_name,
)
from skybench.tracks import Track

__all__ = ["EXPERIMENT_KIND_TAG", "MODEL_TRAINING", "annotate_runs", "mark_model_training", "prepare", "runs_url",
           "share_view", "track_urls", "view_columns"]

# rank and group: the same tags as the leaderboard stage writes (skybench.tracking.leaderboard.tag_ranks)
RANK_TAG, GROUP_TAG, ON_BOARD_TAG = "rank", "group", "skybench.leaderboard"
ON_BOARD_FILTER = f"tags.`{ON_BOARD_TAG}` = 'yes'"
VIEW_KEY = "skybench-leaderboard"
SHARED_VIEW_TAG = "mlflow.sharedViewState."  # + the key: the UI's "share view" experiment tag (plain JSON read too)


def mark_model_training(c: MlflowClient | None = None) -> list[str]:
    """Tag every ``skybench-*`` experiment a model-training experiment; return the names newly tagged."""
    c = c or client()
    done = []
    for exp in c.search_experiments(filter_string="name LIKE 'skybench-%'", max_results=1000):
        if exp.tags.get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING:
            c.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
            done.append(exp.name)
    return done


def _evaluation_runs(c: MlflowClient, experiment_id: str) -> list[Run]:
    """Complete evaluation runs of an experiment, oldest first."""
    runs: list[Run] = []
    token = None
    while True:
        page = c.search_runs([experiment_id], f"tags.`{KIND_TAG}` = 'evaluation' and attributes.status = 'FINISHED'",
                             order_by=["attributes.start_time ASC"], max_results=1000, page_token=token)
        runs.extend(page)
        if not (token := page.token):
            return sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))


def _board_runs(runs: Iterable[Run], board: pd.DataFrame, release_sha256: str | None) -> dict[str, pd.Series]:
    """{run id: its board row}: per (team, name) of ``board``, the run the leaderboard shows (its latest
    FINISHED outcome, else its latest failure; see :mod:`skybench.tracking.leaderboard`)."""
    latest: dict[tuple[str, str, bool], Run] = {}
    for run in runs:  # oldest first: the last one wins
        if release_sha256 is not None and run.data.tags.get("release_sha256") != release_sha256:
            continue
        ok = run.data.tags.get("status", "FINISHED") in ("FINISHED", "")
        latest[(run.data.params.get("team", ""), run.data.params.get("name", ""), ok)] = run
    out = {}
    for _, row in board.iterrows():
        key = (str(row["team"]), str(row["name"]))
        found = latest.get((*key, row["status"] == "FINISHED")) or latest.get((*key, False))
        if found is not None:
            out[found.info.run_id] = row
    return out


def _run_name(track: Track, row: pd.Series) -> str:
    primary = track.metrics.primary
    entry = f"{row['team']}/{row['name']}"
    if pd.isna(row["rank"]):
        return run_name(f"{row['status']} {entry}")
    group = row.get("group")
    value = row[primary]
    head = f"{int(row['rank'])}" + (f" {group}" if isinstance(group, str) and group else "")
    return run_name(f"{head} {primary}={value:.4f} {entry}" if pd.notna(value) else f"{head} {entry}")


def annotate_runs(track: Track, board: pd.DataFrame, *, release_sha256: str | None = None,
                  c: MlflowClient | None = None) -> int:
    """Name and tag the runs of ``board`` (a :func:`skybench.tracking.leaderboard.leaderboard` of ``track`` on
    ``release_sha256``) in the track's participant and organiser experiments, so that the UI's first column
    reads rank, group, primary metric and entry; undo it on runs no longer on the board. Return how many runs
    changed."""
    c = c or client()
    changed = 0
    for name in (experiment_name(track.name), organiser_experiment(track.name)):
        exp = c.get_experiment_by_name(name)
        if exp is None:
            continue
        runs = _evaluation_runs(c, exp.experiment_id)
        shown = _board_runs(runs, board, release_sha256)
        for run in runs:
            tags = run.data.tags
            row = shown.get(run.info.run_id)
            if row is None:
                plain = run_name(f"{run.data.params.get('team', '')}/{run.data.params.get('name', '')}")
                if tags.get(ON_BOARD_TAG) or run.info.run_name != plain:
                    c.update_run(run.info.run_id, name=plain)
                    for key in (RANK_TAG, GROUP_TAG, ON_BOARD_TAG):
                        if key in tags:
                            c.delete_tag(run.info.run_id, key)
                    changed += 1
                continue
            group = row.get("group")
            want = {RANK_TAG: "" if pd.isna(row["rank"]) else str(int(row["rank"])),
                    GROUP_TAG: group if isinstance(group, str) else "", ON_BOARD_TAG: "yes"}
            name_now = _run_name(track, row)
            if run.info.run_name != name_now or any(tags.get(k) != v for k, v in want.items()):
                c.update_run(run.info.run_id, name=name_now)
                for key, value in want.items():
                    c.set_tag(run.info.run_id, key, value)
                changed += 1
    return changed


def _facets(sort_metric: str, higher_is_better: bool) -> dict[str, str | bool]:
    return {"searchFilter": ON_BOARD_FILTER, "orderByKey": f"metrics.`{sort_metric}`",
            "orderByAsc": not higher_is_better}


def view_columns(track: Track) -> list[str]:
    """The runs table's columns after the run name (the UI's ``<type>.`<name>``` keys): the ranked metric, its
    interval, the track's other default leaderboard metrics, each with its interval where the board has one, then
    the rank and group tags."""
    from skybench.tracking.leaderboard import _metric_columns, default_columns, metric_prefix

    p, board = track.metrics.primary, _metric_columns(track)
    shown = [c for c in default_columns(track) if c in track.metrics.report and c != p]
    metrics = [p, f"{p}_ci_low", f"{p}_ci_high",
               *(x for c in shown for x in ((c, f"{c}_ci_low", f"{c}_ci_high") if f"{c}_ci_low" in board else (c,)))]
    return ([f"metrics.`{metric_prefix(track)}{m}`" for m in dict.fromkeys(metrics)]
            + [f"tags.`{RANK_TAG}`", f"tags.`{GROUP_TAG}`"])


def share_view(track: Track, experiment_id: str, c: MlflowClient | None = None) -> None:
    """Store the leaderboard view of ``track`` in its experiment (the tag the UI's "share view" writes)."""
    c = c or client()
    from skybench.tracking.leaderboard import metric_prefix

    state = {**_facets(metric_prefix(track) + track.metrics.primary, track.metrics.higher_is_better),
             "selectedColumns": view_columns(track), "runsHiddenMode": "SHOW_ALL"}
    c.set_experiment_tag(experiment_id, SHARED_VIEW_TAG + VIEW_KEY, json.dumps(state))


def runs_url(base_url: str, experiment_id: str) -> str:
    """The UI's runs view of an experiment with the shared view of :func:`share_view` (leaderboard runs only,
    best first by the ranked metric). The link carries the view's key only: MLflow 3.17's UI skips a shared view
    when the link also has search facets (``orderByKey``...); it writes the view's facets into the URL itself."""
    query = urllib.parse.urlencode({"viewStateShareKey": VIEW_KEY})
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"


def track_urls(track: Track, base_url: str, c: MlflowClient | None = None) -> list[tuple[str, str]]:
    """(experiment name, :func:`runs_url`) of the track's participant and organiser experiments that exist,
    sorted by the metric the leaderboard ranks on (``public_<primary>`` while a split track's phase is open);
    stores each one's :func:`share_view`."""
    c = c or client()
    out = []
    for name in (experiment_name(track.name), organiser_experiment(track.name)):
        if (exp := c.get_experiment_by_name(name)) is not None:
            share_view(track, exp.experiment_id, c)
            out.append((name, runs_url(base_url, exp.experiment_id)))
    return out


def prepare(base_url: str, tracks: Iterable[str] | None = None) -> list[tuple[str, str]]:
    """What ``skybench ui`` does before serving: tag the experiments, annotate each track's leaderboard runs
    (on the track's current release when it is there, as ``skybench leaderboard``), return (experiment, URL)."""
    from skybench.release import layout, release_digest
    from skybench.tracking.leaderboard import leaderboard
    from skybench.tracks import default_release, list_tracks, load_track

    c = client()
    mark_model_training(c)
    urls = []
    for name in tracks if tracks is not None else list_tracks():
        track = load_track(name)
        if not (found := track_urls(track, base_url, c)):
            continue
        rel = default_release(track)
        sha = release_digest(rel) if layout.is_release(rel) else None
        annotate_runs(track, leaderboard(track, release_sha256=sha), release_sha256=sha, c=c)
        urls.extend(found)
    return urls
