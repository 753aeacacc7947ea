"""Leaderboard of a track, built from its MLflow evaluation runs (see :mod:`skybench.tracking`), for organisers:
it reads the organiser experiment, and publishes (``write_results``) only the phase's part of the metrics.

One row per (team, name): its latest FINISHED evaluation, ranked by the primary metric; ties go to the
earliest submission of the scored version (tag ``submitted``: its git commit time, or when the server received
it, or when it was first evaluated; see :func:`skybench.harness.evaluate.submission_time`), then to team/name. Failed
runs never rank, hold a row or reserve a time: an entry with only failures (or no primary metric) is listed
after the ranked rows, unranked, with its latest failure.

A track with ``evaluation.public_fraction`` has a public and a private part of its test set: while its
``evaluation.phase`` is ``open`` every metric column holds the public-part value (``public_<m>`` in MLflow) and
no private or whole-set value is shown; once ``closed`` the columns hold the private-part values, which rank.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import pandas as pd
from mlflow.store.tracking import SEARCH_MAX_RESULTS_DEFAULT
from mlflow.tracking import MlflowClient

from skybench.tracking import KIND_TAG, experiment_name, organiser_experiment, tracking_uri
from skybench.tracks import Track

__all__ = ["columns", "default_columns", "failure_notes", "known_columns", "leaderboard", "metric_prefix", "render",
           "scored_on", "terminal_view", "write_results"]

Format = Literal["table", "markdown", "csv", "html"]


def _metric_columns(track: Track, extra_columns: Sequence[str] = ()) -> list[str]:
    p = track.metrics.primary
    names = [*track.metrics.report, *extra_columns, f"{p}_ci_low", f"{p}_ci_high"]
    return list(dict.fromkeys(names))  # dedupe, keep order


def columns(track: Track, extra_columns: Sequence[str] = ()) -> list[str]:
    """Column order of :func:`leaderboard`."""
    head = ["rank", "team", "name", "status"]
    return [*head, *_metric_columns(track, extra_columns), "format", "device", "submitted", "reason"]


def metric_prefix(track: Track) -> str:
    """MLflow metric prefix the leaderboard shows: "" (no split), "public_" (open) or "private_" (closed)."""
    if track.evaluation.public_fraction is None:
        return ""
    return "public_" if track.evaluation.phase == "open" else "private_"


def scored_on(track: Track) -> str:
    """One line saying which part of the test set the leaderboard ranks on."""
    f = track.evaluation.public_fraction
    if f is None:
        return "the whole test set"
    if track.evaluation.phase == "open":
        return f"the public {f:.0%} of the test set (phase open; private scores hidden until it closes)"
    return f"the private {1 - f:.0%} of the test set (phase closed: final ranking)"


def _runs(track: Track) -> pd.DataFrame:
    """Complete evaluation runs of the track, oldest first (explicit ASC: MLflow defaults to newest first).

    Uses an ``MlflowClient`` on :func:`tracking_uri` rather than ``mlflow.set_tracking_uri``, which would
    pin the process-wide URI and ignore a later ``$MLFLOW_TRACKING_URI``.

    Reads the organiser experiment (every metric: a closed phase ranks on the private ones) when there is one,
    else the participant experiment; what is shown is decided by :func:`metric_prefix` either way.
    """
    c = MlflowClient(tracking_uri=tracking_uri())
    exp = (c.get_experiment_by_name(organiser_experiment(track.name))
           or c.get_experiment_by_name(experiment_name(track.name)))
    if exp is None:
        return pd.DataFrame()
    rows, token = [], None
    while True:
        page = c.search_runs(
            [exp.experiment_id],
            f"tags.`{KIND_TAG}` = 'evaluation' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time ASC"],
            max_results=SEARCH_MAX_RESULTS_DEFAULT,
            page_token=token,
        )
        for run in page:
            rows.append(
                {
                    "start_time": pd.Timestamp(run.info.start_time, unit="ms", tz="UTC"),
                    **{f"params.{k}": v for k, v in run.data.params.items()},
                    **{f"tags.{k}": v for k, v in run.data.tags.items()},
                    **{f"metrics.{k}": v for k, v in run.data.metrics.items()},
                }
            )
        if not (token := page.token):
            break
    return pd.DataFrame(rows).sort_values("start_time", kind="stable") if rows else pd.DataFrame()


def leaderboard(
    track: Track, *, release_sha256: str | None = None, extra_columns: Sequence[str] = ()
) -> pd.DataFrame:
    """The ranked leaderboard (see module docstring); only runs on ``release_sha256`` if given."""
    cols = columns(track, extra_columns)
    runs = _runs(track)
    if runs.empty:
        return pd.DataFrame({c: pd.Series(dtype="Int64" if c == "rank" else object) for c in cols})

    def col(name: str, default: object = "") -> pd.Series:
        return runs[name] if name in runs else pd.Series(default, index=runs.index)

    prefix = metric_prefix(track)
    status = col("tags.status", "FINISHED").replace("", "FINISHED").fillna("FINISHED")
    when = pd.to_datetime(col("tags.submitted", ""), utc=True, errors="coerce", format="ISO8601").dt.as_unit("ms")
    runs = runs.assign(team=col("params.team"), name=col("params.name"), status=status,  # untagged: run start
                       submitted=when.fillna(runs["start_time"].dt.as_unit("ms")))
    if release_sha256 is not None:
        runs = runs[col("tags.release_sha256") == release_sha256]
    finished = runs[runs["status"] == "FINISHED"].drop_duplicates(["team", "name"], keep="last")
    entry = pd.MultiIndex.from_frame(runs[["team", "name"]])
    done = pd.MultiIndex.from_frame(finished[["team", "name"]]) if len(finished) else pd.MultiIndex.from_tuples(
        [], names=["team", "name"])
    failed = runs[~entry.isin(done)].drop_duplicates(["team", "name"], keep="last")
    latest = pd.concat([finished, failed])

    def get(name: str, default: object = "") -> pd.Series:
        return latest[name] if name in latest else pd.Series(default, index=latest.index)

    out = pd.DataFrame(
        {
            "team": latest["team"],
            "name": latest["name"],
            "status": latest["status"],
            **{m: pd.to_numeric(get(f"metrics.{prefix}{m}", math.nan))
               for m in _metric_columns(track, extra_columns)},
            "format": get("params.format"),
            "device": get("tags.device"),
            "when": latest["submitted"],
            "reason": get("tags.failure_reason"),
        }
    ).fillna({"format": "", "device": "", "reason": ""})

    primary = track.metrics.primary
    ok = (out["status"] == "FINISHED") & out[primary].notna()
    keys = ["when", "team", "name"]
    ranked = out[ok].sort_values([primary, *keys], ascending=[not track.metrics.higher_is_better, True, True, True])
    rest = out[~ok].sort_values(keys)
    board = pd.concat([ranked, rest], ignore_index=True)
    board.insert(0, "rank", pd.array([*range(1, len(ranked) + 1), *[pd.NA] * len(rest)], dtype="Int64"))
    board["submitted"] = [t.isoformat(timespec="milliseconds") for t in board.pop("when")]
    return board[cols]


def _cell(value: object) -> str:
    """Human-readable cell: floats to 4 decimals, missing values blank, one line, control characters (terminal
    escapes, bidi overrides) shown escaped: team-supplied text cannot restyle or reorder the output."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in " ".join(str(value).split()))


def render(df: pd.DataFrame, fmt: Format = "table") -> str:
    """Render a leaderboard as a text table, a markdown pipe table, CSV (full precision) or HTML."""
    if fmt == "csv":
        return df.to_csv(index=False)
    cells = [[_cell(v) for v in row] for row in df.astype(object).itertuples(index=False)]
    if fmt == "markdown":
        lines = [list(map(str, df.columns)), ["---"] * len(df.columns), *cells]
        def md(cell: str) -> str:  # no table breaks, no raw HTML
            return cell.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")

        return "\n".join("| " + " | ".join(map(md, line)) + " |" for line in lines) + "\n"
    if fmt == "html":
        return pd.DataFrame(cells, columns=df.columns).to_html(index=False, escape=True)
    if fmt == "table":
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table
        from rich.text import Text

        table = Table(*(escape(str(c)) for c in df.columns))  # cells as Text: never parsed as markup ("[/]")
        for row in cells:
            table.add_row(*map(Text, row))
        buf = io.StringIO()
        Console(file=buf, width=1000, color_system=None, force_terminal=False).print(table)
        return "\n".join(line.rstrip() for line in buf.getvalue().splitlines()) + "\n"
    raise ValueError(f"unknown format {fmt!r}; choose table, markdown, csv or html")


def write_results(
    track: Track, out_dir: Path, *, release_sha256: str | None = None, extra_columns: Sequence[str] = ()
) -> None:
    """Write ``leaderboard.md`` and ``metrics.json`` ({"team/name": {metric: value}}, ranked entries).

    Deterministic for a given store, so re-publishing (e.g. after a DVC run-cache restore) is idempotent.
    """
    df = leaderboard(track, release_sha256=release_sha256, extra_columns=extra_columns)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "leaderboard.md").write_text(f"# Leaderboard: {track.name}\n\nRanked on {scored_on(track)}.\n\n"
                                            + render(df, "markdown"))
    metrics = {
        f"{row['team']}/{row['name']}": {
            m: float(row[m]) for m in _metric_columns(track, extra_columns) if pd.notna(row[m])
        }
        for _, row in df[df["rank"].notna()].iterrows()
    }
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")


# Terminal view: the track's default columns (``leaderboard.columns`` of its YAML), ``--columns``, ``--all``.
_CI = "_ci"
_CLIP = {"team": 14, "name": 20}  # team-chosen text: at most this wide in a chosen-columns table


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "\u2026"


def default_columns(track: Track) -> list[str]:
    """The columns ``skybench leaderboard TRACK`` prints by default (the track YAML's ``leaderboard.columns``)."""
    if track.leaderboard is not None:
        return list(track.leaderboard.columns)
    p = track.metrics.primary
    return ["rank", "group", "team", "name", "status", p, f"{p}{_CI}"]


def interval_columns(df: pd.DataFrame) -> list[str]:
    """``<m>_ci`` for every ``<m>_ci_low`` with its ``<m>_ci_high`` in ``df``: the interval in one cell."""
    return [c.removesuffix("_low") for c in df.columns
            if str(c).endswith(f"{_CI}_low") and f"{str(c).removesuffix('_low')}_high" in df.columns]


def known_columns(df: pd.DataFrame) -> list[str]:
    """Every column :func:`terminal_view` can show for ``df``."""
    return [*map(str, df.columns), *interval_columns(df)]


def terminal_view(track: Track, df: pd.DataFrame, columns: Sequence[str] | None = None,
                  all_columns: bool = False) -> pd.DataFrame:
    """The columns of ``df`` to print in a terminal: all of them, ``columns`` (an unknown one raises ValueError
    naming the known ones), or :func:`default_columns` (those ``df`` lacks left out). ``<m>_ci`` cells read
    ``[low, high]``; team and name are cut to :data:`_CLIP` characters (all of them with ``all_columns``)."""
    if all_columns:
        return df
    known = known_columns(df)
    if columns is not None:
        if unknown := [c for c in columns if c not in known]:
            raise ValueError(f"unknown column(s) {', '.join(unknown)} for {track.name}; known: {', '.join(known)}")
        if not columns:
            raise ValueError(f"no column chosen for {track.name}; known: {', '.join(known)}")
        chosen = list(dict.fromkeys(columns))
    else:
        chosen = [c for c in default_columns(track) if c in known]
    out = pd.DataFrame(index=df.index)
    for c in chosen:
        if c in _CLIP and c in df.columns:
            out[c] = [_clip(_cell(v), _CLIP[c]) for v in df[c].astype(object)]
        elif c in df.columns:
            out[c] = df[c]
        else:
            out[c] = [f"[{_cell(lo)}, {_cell(hi)}]" if _cell(lo) or _cell(hi) else ""
                      for lo, hi in zip(df[f"{c}_low"].astype(object), df[f"{c}_high"].astype(object), strict=True)]
    return out


def failure_notes(df: pd.DataFrame, view: pd.DataFrame) -> list[str]:
    """One line per entry with a failure reason, ``team/name: reason``, when ``view`` does not show reasons."""
    if "reason" in view.columns or "reason" not in df.columns:
        return []
    return [_cell(f"{r['team']}/{r['name']}: {r['reason']}") for _, r in df.iterrows() if _cell(r["reason"])]
