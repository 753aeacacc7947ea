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
import re
import warnings
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from mlflow.entities import Experiment
from mlflow.exceptions import MlflowException
from mlflow.store.tracking import SEARCH_MAX_RESULTS_DEFAULT
from mlflow.tracking import MlflowClient

from skybench.common import SLUG, stratum_key, stratum_labels, write_whole
from skybench.escape import escaped_line
from skybench.harness.visibility import SHOWN_DECIMALS, shown_value
from skybench.tracking import KIND_TAG, experiment_name, organiser_experiment, tracking_uri
from skybench.tracking.ranks import RANK_COLUMNS
from skybench.tracks import Stratum, Track

__all__ = ["add_rank_intervals", "by_columns", "by_leaderboard", "columns", "default_columns", "failure_notes",
           "find_entry", "finished_entries", "known_columns", "leaderboard", "log_strata_plot", "metric_prefix",
           "plot_strata", "render", "scored_on", "strata_html", "stratum", "tag_ranks", "terminal_view",
           "write_results"]

Format = Literal["table", "markdown", "csv", "html"]


def _metric_columns(track: Track, extra_columns: Sequence[str] = ()) -> list[str]:
    """The metrics, each report metric with an interval (:meth:`skybench.tasks.base.Task.interval_metrics`)
    followed by its bounds, and the primary's interval last."""
    from skybench.tasks import get_task

    p, ci = track.metrics.primary, get_task(track.task).interval_metrics(track) - {track.metrics.primary}
    names = [x for m in (*track.metrics.report, *extra_columns)
             for x in ((m, f"{m}_ci_low", f"{m}_ci_high") if m in ci else (m,))]
    return list(dict.fromkeys([*names, f"{p}_ci_low", f"{p}_ci_high"]))  # dedupe, keep order


def columns(track: Track, extra_columns: Sequence[str] = ()) -> list[str]:
    """Column order of :func:`leaderboard`."""
    head = ["rank", *RANK_COLUMNS, "team", "name", "status"]
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

    Reads the organiser experiment (every metric: a closed phase ranks on the private ones) when it holds
    evaluations, else the participant experiment; what is shown is decided by :func:`metric_prefix` either way.
    """
    c = MlflowClient(tracking_uri=tracking_uri())
    for name in (organiser_experiment(track.name), experiment_name(track.name)):
        if (exp := c.get_experiment_by_name(name)) is not None and not (runs := _evaluations(c, exp)).empty:
            return runs
    return pd.DataFrame()


def _evaluations(c: MlflowClient, exp: Experiment) -> pd.DataFrame:
    """The complete evaluation runs of experiment ``exp``, oldest first."""
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
                    "run_id": run.info.run_id,
                    **{f"params.{k}": v for k, v in run.data.params.items()},
                    **{f"tags.{k}": v for k, v in run.data.tags.items()},
                    **{f"metrics.{k}": v for k, v in run.data.metrics.items()},
                }
            )
        if not (token := page.token):
            break
    return pd.DataFrame(rows).sort_values("start_time", kind="stable") if rows else pd.DataFrame()


def leaderboard(
    track: Track, *, release_sha256: str | None = None, extra_columns: Sequence[str] = (),
    release: Path | None = None, versions: Collection[tuple[str, str, str | None]] | None = None,
    exclude_teams: Collection[str] = (),
) -> pd.DataFrame:
    """The ranked leaderboard (see module docstring); only runs on ``release_sha256`` if given. With the
    ``release`` folder (its hidden test split) the rank intervals and groups too (:func:`add_rank_intervals`).
    ``versions``: only these submissions, (team, name, submission sha256), or (team, name, None) for the entry's
    latest run (a challenge's final entries: the version a team chose, not its latest). ``exclude_teams``: rows
    of these teams are left out before ranking (a challenge server's board leaves out the project's examples)."""
    return _board(track, release_sha256=release_sha256, extra_columns=extra_columns, release=release,
                  versions=versions, exclude_teams=exclude_teams)[columns(track, extra_columns)]


def _board(track: Track, *, release_sha256: str | None, extra_columns: Sequence[str],
           release: Path | None, versions: Collection[tuple[str, str, str | None]] | None = None,
           exclude_teams: Collection[str] = ()) -> pd.DataFrame:
    """:func:`leaderboard` with its runs' ``run_id`` (organiser runs when there are)."""
    cols = [*columns(track, extra_columns), "run_id"]
    runs = _runs(track)
    if runs.empty:
        return pd.DataFrame({c: pd.Series(dtype="Int64" if c in ("rank", "rank_low", "rank_high") else object)
                             for c in cols})

    def col(name: str, default: object = "") -> pd.Series:
        return runs[name] if name in runs else pd.Series(default, index=runs.index)

    prefix = metric_prefix(track)
    status = col("tags.status", "FINISHED").replace("", "FINISHED").fillna("FINISHED")
    when = pd.to_datetime(col("tags.submitted", ""), utc=True, errors="coerce", format="ISO8601").dt.as_unit("ms")
    runs = runs.assign(team=col("params.team"), name=col("params.name"), status=status,  # untagged: run start
                       submitted=when.fillna(runs["start_time"].dt.as_unit("ms")))
    if release_sha256 is not None:
        runs = runs[col("tags.release_sha256") == release_sha256]
    if exclude_teams:
        runs = runs[~runs["team"].isin(list(exclude_teams))]
    if versions is not None:
        chosen = [(t, n, v) in versions or (t, n, None) in versions
                  for t, n, v in zip(runs["team"], runs["name"], col("tags.submission_sha256"), strict=True)]
        runs = runs[pd.Series(chosen, index=runs.index, dtype=bool)]
    finished = runs[runs["status"] == "FINISHED"].drop_duplicates(["team", "name"], keep="last")
    entry = pd.MultiIndex.from_frame(runs[["team", "name"]])
    done = pd.MultiIndex.from_frame(finished[["team", "name"]]) if len(finished) else pd.MultiIndex.from_tuples(
        [], names=["team", "name"])
    failed = runs[~entry.isin(done)].drop_duplicates(["team", "name"], keep="last")
    latest = _small_strata_blank(track, pd.concat([finished, failed]))

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
            "run_id": latest["run_id"],
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
    return add_rank_intervals(track, board, release)[cols]


def _small_strata_blank(track: Track, runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with every stratum bin's metric blanked where the participant view hides it (a bin with fewer than
    :data:`skybench.harness.visibility.MIN_STRATUM_OBJECTS` objects): the board is published and reads the
    organiser experiment, which keeps every bin, so without this a report or ``--by`` column would show a mean
    over a handful of objects that no participant record shows."""
    from skybench.harness.visibility import without_small_strata

    runs = runs.copy()
    cols = [c for c in runs.columns if c.startswith("metrics.")]
    for idx in runs.index:
        metrics = {c[len("metrics."):]: runs.at[idx, c] for c in cols if pd.notna(runs.at[idx, c])}
        for key in set(metrics) - set(without_small_strata(track, metrics)):
            runs.at[idx, f"metrics.{key}"] = math.nan
    return runs


_INTERVALS: dict[tuple[object, ...], pd.DataFrame] = {}  # add_rank_intervals' last table, by what it depends on


def add_rank_intervals(track: Track, board: pd.DataFrame, release: Path | None) -> pd.DataFrame:
    """``board`` with ``rank_low``, ``rank_high`` and ``group`` (:mod:`skybench.tracking.ranks`) of its ranked
    entries, from the predictions saved with their organiser runs (column ``run_id``) and the hidden test split
    of ``release``. Empty (NA, "") without a release, or when a ranked entry has no saved predictions (a warning
    says which): an interval among some entries only would not be the leaderboard's."""
    from skybench.tracking import ranks

    board = board.assign(rank_low=pd.array([pd.NA] * len(board), dtype="Int64"),
                         rank_high=pd.array([pd.NA] * len(board), dtype="Int64"), group="")
    ranked = board.index[board["rank"].notna()]
    if release is None or not len(ranked):
        return board
    try:
        from skybench.release import release_digest
        from skybench.release.reader import open_release

        # The intervals are a function of the track, the release's content and the ranked runs in order (a run's
        # saved predictions never change): `skybench leaderboard --write` asks three times, each a bootstrap.
        key = (track.model_dump_json(), release_digest(release),
               tuple((board.at[i, "team"], board.at[i, "name"], board.at[i, "run_id"]) for i in ranked))
        if (table := _INTERVALS.get(key)) is None:
            hidden = open_release(release).hidden("test")
            c = MlflowClient(tracking_uri=tracking_uri())
            predictions = {f"{board.at[i, 'team']}/{board.at[i, 'name']}":
                           ranks.load_predictions(c, board.at[i, "run_id"]) for i in ranked}
            _, values = ranks.primary_resamples(track, hidden, predictions)
            table = ranks.rank_intervals(values, track.metrics.higher_is_better, range(len(ranked)))
            _INTERVALS.clear()  # one board's worth: a long-lived process (the server) does not accumulate
            _INTERVALS[key] = table
    except (OSError, ValueError, KeyError, MlflowException) as exc:
        warnings.warn(f"{track.name}: no rank intervals: {exc}", stacklevel=2)
        return board
    board.loc[ranked, "rank_low"] = table["rank_low"].to_numpy()
    board.loc[ranked, "rank_high"] = table["rank_high"].to_numpy()
    board.loc[ranked, "group"] = table["group"].to_numpy()
    return board


def finished_entries(track: Track, *, release_sha256: str | None = None) -> pd.DataFrame:
    """The ranked entries (``team``, ``name``, ``run_id`` of their latest FINISHED evaluation), best first."""
    board = _board(track, release_sha256=release_sha256, extra_columns=(), release=None)
    return board.loc[board["rank"].notna(), ["team", "name", "run_id"]].reset_index(drop=True)


def find_entry(entries: pd.DataFrame, who: str, track: str) -> tuple[str, str]:
    """(``team/name``, run id) of the entry ``who`` (``team/name``, or a ``name`` only one team has) among
    :func:`finished_entries`; LookupError naming the entries there are."""
    keys = (entries["team"] + "/" + entries["name"]).tolist()
    hits = [i for i, k in enumerate(keys) if k == who] or [i for i, n in enumerate(entries["name"]) if n == who]
    if len(hits) == 1:
        return keys[hits[0]], str(entries["run_id"].iloc[hits[0]])
    if hits:
        raise LookupError(f"{who!r} is the name of {len(hits)} entries of {track}: "
                          f"{', '.join(keys[i] for i in hits)}; give team/name")
    shown = ", ".join(keys) if keys else "none: no FINISHED evaluation on this release"
    raise LookupError(f"no FINISHED entry {who!r} on the {track} leaderboard; its entries: {shown}")


def _cell(value: object) -> str:
    """Human-readable cell: floats to :data:`SHOWN_DECIMALS` decimals, missing values blank, one line, control
    characters (terminal escapes, bidi overrides) shown escaped: team-supplied text cannot restyle or reorder it."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.{SHOWN_DECIMALS}f}"
    return escaped_line(value)


IDENTITY_COLUMNS = ("team", "name")


def shown_identity(value: object) -> str:
    """A team or entry name as a table shows it: itself when it is a slug (every entry's name is one), else quoted
    with its odd characters escaped (``'alice\\u3000'``), so that a refused folder named ``alice `` (a trailing
    space, a newline, an ideographic space) is not shown as ``alice``."""
    text = "" if value is None or value is pd.NA else str(value)
    return text if not text or re.fullmatch(SLUG, text) else escaped_line(repr(text))


_SHOWN = "skybench_identities_shown"  # DataFrame.attrs key: team and name are shown_identity's already


def _shown_identities(df: pd.DataFrame) -> pd.DataFrame:
    out = df.assign(**{c: [shown_identity(v) for v in df[c].astype(object)] for c in IDENTITY_COLUMNS
                       if c in df.columns})
    out.attrs[_SHOWN] = True
    return out


_MD_PLAIN = re.compile(r"[A-Za-z0-9 .,:;+%=/_-]*")  # numbers, names, times: no markdown construct ...
_MD_ACTIVE = re.compile(r"www\.|://|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])", re.IGNORECASE)  # ... unless autolink, emphasis
_MD_PUNCT = re.compile(r"[!-,./:-@\[-`{-~]")  # ASCII punctuation but "-"


def _md(cell: str, header: bool = False) -> str:
    """A markdown table cell that shows ``cell`` as text. A header (ours) only keeps the table whole; a cell with
    anything but letters, digits and plain punctuation, or an autolink or emphasis in those, has every ASCII
    punctuation mark backslash-escaped (CommonMark 2.4: team text makes no link, image, emphasis, table break or
    autolink, "https\\://"); ``<``/``>`` are entities (no raw HTML) either way."""
    if header or (_MD_PLAIN.fullmatch(cell) and not _MD_ACTIVE.search(cell)):
        return cell.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_PUNCT.sub(lambda m: {"<": "&lt;", ">": "&gt;"}.get(m[0], "\\" + m[0]), cell)


def render(df: pd.DataFrame, fmt: Format = "table") -> str:
    """Render a leaderboard as a text table, a markdown pipe table, CSV (full precision, names as they are) or HTML;
    team and name as :func:`shown_identity` (a :func:`terminal_view` has them so already)."""
    if fmt == "csv":
        return df.to_csv(index=False)
    if not df.attrs.get(_SHOWN):
        df = _shown_identities(df)
    cells = [[_cell(v) for v in row] for row in df.astype(object).itertuples(index=False)]
    if fmt == "markdown":
        lines = [list(map(str, df.columns)), ["---"] * len(df.columns), *cells]
        return "\n".join("| " + " | ".join(_md(c, header=k < 2) for c in line) + " |"
                         for k, line in enumerate(lines)) + "\n"
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
    track: Track, out_dir: Path, *, release_sha256: str | None = None, extra_columns: Sequence[str] = (),
    release: Path | None = None,
) -> None:
    """Write ``leaderboard.md`` and ``metrics.json`` ({"team/name": {metric: value}}, ranked entries, with
    ``rank``, ``rank_low``, ``rank_high`` and ``group``; values as published, :func:`skybench.harness.visibility.
    shown_value`), and tag the ranked runs with those four (:func:`tag_ranks`).

    Deterministic for a given store, so re-publishing (e.g. after a DVC run-cache restore) is idempotent.
    """
    full = _board(track, release_sha256=release_sha256, extra_columns=extra_columns, release=release)
    df = full[columns(track, extra_columns)]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    board_md = f"# Leaderboard: {track.name}\n\nRanked on {scored_on(track)}.\n\n" + render(df, "markdown")
    metrics = {
        f"{row['team']}/{row['name']}": {
            **_rank_fields(row),
            **{m: shown_value(track, float(row[m])) for m in _metric_columns(track, extra_columns) if pd.notna(row[m])},
        }
        for _, row in df[df["rank"].notna()].iterrows()
    }
    write_whole(out_dir, {"leaderboard.md": board_md, "metrics.json": json.dumps(metrics, indent=2) + "\n"})
    tag_ranks(track, full)


# --------------------------------------------------------------------------- strata (`--by COLUMN`, small multiples)


def stratum(track: Track, column: str) -> Stratum:
    """The track's stratum on ``column``; ``ValueError`` naming the track's strata otherwise."""
    for s in track.strata:
        if s.column == column:
            return s
    have = ", ".join(s.column for s in track.strata) or "none"
    raise ValueError(f"track {track.name!r} has no stratum {column!r} (its strata: {have}); add it to the "
                     f"strata: section of benchmarks/{track.name}.yaml")


def by_columns(track: Track, column: str, metric: str | None = None, *, intervals: bool = False) -> list[str]:
    """Metric keys of ``metric`` (default: the stratum's) in each bin of ``column``, in bin order; with
    ``intervals``, each followed by its ``_ci_low`` and ``_ci_high``."""
    s = stratum(track, column)
    keys = [stratum_key(column, label, metric or s.metric) for label in stratum_labels(s.edges, s.values)]
    return [x for k in keys for x in ((k, f"{k}_ci_low", f"{k}_ci_high") if intervals else (k,))]


def by_leaderboard(track: Track, column: str, *, metric: str | None = None,
                   release_sha256: str | None = None, release: Path | None = None) -> pd.DataFrame:
    """The leaderboard with one column per bin of ``column`` (named ``<metric>[<bin>]``), after the rank, the
    entry, its status and the primary metric; rows ranked as :func:`leaderboard`."""
    s = stratum(track, column)
    m = metric or s.metric
    if (known := track.strata_metrics()) is not None and m not in known:
        raise ValueError(f"no per-bin metric {m!r} in track {track.name!r}; choose one of {', '.join(sorted(known))}")
    keys = by_columns(track, column, m)
    board = leaderboard(track, release_sha256=release_sha256, extra_columns=keys, release=release)
    labels = stratum_labels(s.edges, s.values)
    head = ["rank", "group", "team", "name", "status", track.metrics.primary]
    return board[[*head, *keys]].rename(columns={k: f"{m}[{b}]" for k, b in zip(keys, labels, strict=True)})


def plot_strata(track: Track, path: Path, *, release_sha256: str | None = None) -> Path | None:
    """Small multiples of the track's strata into ``path`` (PNG): one panel per stratum, its metric against the
    bin, one line per ranked entry with its bootstrap interval as error bars. The values are the leaderboard's
    (the phase's part of the test set, :func:`metric_prefix`). None (nothing written) without strata or entries."""
    if not track.strata:
        return None
    keys = [k for s in track.strata for k in by_columns(track, s.column, intervals=True)]
    board = leaderboard(track, release_sha256=release_sha256, extra_columns=keys)
    board = board[board["rank"].notna()]
    if board.empty:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(track.strata)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.4), squeeze=False)
    for ax, s in zip(axes[0], track.strata, strict=True):
        labels = stratum_labels(s.edges, s.values)
        cols = by_columns(track, s.column)
        x = np.arange(len(labels))
        for _, row in board.iterrows():
            y = row[cols].to_numpy(dtype=float)
            low = np.array([row.get(f"{c}_ci_low", np.nan) for c in cols], dtype=float)
            high = np.array([row.get(f"{c}_ci_high", np.nan) for c in cols], dtype=float)
            err = np.vstack([np.where(np.isfinite(low), y - low, 0), np.where(np.isfinite(high), high - y, 0)])
            ax.errorbar(x, y, yerr=np.clip(err, 0, None), marker="o", ms=3, capsize=2, lw=1,
                        label=f"{int(row['rank'])}. {row['team']}/{row['name']}"[:40])
        ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=7)
        ax.set(xlabel=s.column, ylabel=s.metric, title=f"{s.metric} by {s.column}")
        ax.title.set_fontsize(9)
    axes[0][0].legend(fontsize=6)
    fig.suptitle(f"{track.name}: metric per bin, on {scored_on(track)}", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata={"Software": None})  # no version string: the same bytes every run
    plt.close(fig)
    return path


def strata_html(track: Track, *, release_sha256: str | None = None) -> str:
    """The small-multiples plot as an HTML ``<img>`` (inline PNG) to follow the HTML leaderboard; "" without one."""
    import base64
    import tempfile

    with tempfile.TemporaryDirectory(prefix="skybench-strata-") as tmp:
        png = plot_strata(track, Path(tmp) / "strata.png", release_sha256=release_sha256)
        if png is None:
            return ""
        data = base64.b64encode(png.read_bytes()).decode("ascii")
    return f'<img alt="{track.name}: metrics per stratum" src="data:image/png;base64,{data}">\n'


STRATA_PLOT = "strata.png"


def log_strata_plot(track: Track, path: Path, *, release_sha256: str | None = None) -> str:
    """Log the small-multiples plot ``path`` to the track's organiser experiment (it is drawn from the
    organiser's records, small bins included), as artifact ``strata.png`` of one run per (track, release) tagged
    ``skybench.kind = leaderboard`` (reused, the artifact replaced; the leaderboard reads only ``evaluation``
    runs). Returns the run id."""
    from skybench.tracking import client, ensure_organiser_experiment

    c = client()
    exp_id = ensure_organiser_experiment(track.name)
    sha = release_sha256 or "any"
    found = c.search_runs([exp_id], f"tags.`{KIND_TAG}` = 'leaderboard' and tags.release_sha256 = '{sha}'",
                          max_results=1)
    run_id = found[0].info.run_id if found else c.create_run(
        exp_id, run_name=f"leaderboard {track.name}", tags={KIND_TAG: "leaderboard", "release_sha256": sha,
                                                             "skybench.track": track.name}).info.run_id
    c.log_artifact(run_id, str(path))
    if not found:
        c.set_terminated(run_id, "FINISHED")
    return run_id


def _rank_fields(row: pd.Series) -> dict[str, int | str]:
    """``rank``, and ``rank_low``, ``rank_high``, ``group`` where the board has them."""
    out: dict[str, int | str] = {"rank": int(row["rank"])}
    if pd.notna(row["rank_low"]):
        out |= {"rank_low": int(row["rank_low"]), "rank_high": int(row["rank_high"]), "group": str(row["group"])}
    return out


def tag_ranks(track: Track, board: pd.DataFrame) -> None:
    """Tag each ranked run of ``board`` (a :func:`_board`) with ``rank``, ``rank_low``, ``rank_high`` and ``group``
    (blank without an interval), in its organiser run and the participant run of the same submission and
    release; unranked runs get their rank tags cleared, so a tag never outlives the ranking it came from."""
    from skybench.tracking import find_evaluation

    c = MlflowClient(tracking_uri=tracking_uri())
    for _, row in board.iterrows():
        fields = _rank_fields(row) if pd.notna(row["rank"]) else {}
        tags = {k: str(fields.get(k, "")) for k in ("rank", "rank_low", "rank_high", "group")}
        run_ids = {row["run_id"]}
        run = c.get_run(row["run_id"])
        sub, rel = run.data.tags.get("submission_sha256"), run.data.tags.get("release_sha256")
        if sub and rel and (shown := find_evaluation(track.name, sub, rel, team=str(row["team"]),
                                                     name=str(row["name"]))) is not None:
            run_ids.add(shown.info.run_id)
        for run_id in sorted(run_ids):
            for k, v in tags.items():
                c.set_tag(run_id, k, v)


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
    ``[low, high]``; team and name as :func:`shown_identity`, cut to :data:`_CLIP` characters (not with
    ``all_columns``, nor where two entries would then read alike)."""
    if all_columns:
        return _shown_identities(df)
    known = known_columns(df)
    if columns is not None:
        if unknown := [c for c in columns if c not in known]:
            raise ValueError(f"unknown column(s) {', '.join(unknown)} for {track.name}; known: {', '.join(known)}")
        if not columns:
            raise ValueError(f"no column chosen for {track.name}; known: {', '.join(known)}")
        chosen = list(dict.fromkeys(columns))
    else:
        chosen = [c for c in default_columns(track) if c in known]
    out, shown = pd.DataFrame(index=df.index), _shown_identities(df)
    clipped = {c: [_clip(_cell(v), _CLIP[c]) for v in shown[c]] for c in IDENTITY_COLUMNS if c in df.columns}
    if len(clipped) == len(IDENTITY_COLUMNS):  # two entries that read alike once cut are shown whole
        full = list(zip(*(shown[c] for c in IDENTITY_COLUMNS), strict=True))
        cut = list(zip(*clipped.values(), strict=True))
        whole = {k for k in set(cut) if len({f for f, k2 in zip(full, cut, strict=True) if k2 == k}) > 1}
        for c in IDENTITY_COLUMNS:
            clipped[c] = [s if k not in whole else f for s, f, k in zip(clipped[c], shown[c], cut, strict=True)]
    for c in chosen:
        if c in clipped:
            out[c] = clipped[c]
        elif c in df.columns:
            out[c] = df[c]
        else:
            out[c] = [f"[{_cell(lo)}, {_cell(hi)}]" if _cell(lo) or _cell(hi) else ""
                      for lo, hi in zip(df[f"{c}_low"].astype(object), df[f"{c}_high"].astype(object), strict=True)]
    out.attrs[_SHOWN] = True
    return out


def failure_notes(df: pd.DataFrame, view: pd.DataFrame) -> list[str]:
    """One line per entry with a failure reason, ``team/name: reason``, when ``view`` does not show reasons."""
    if "reason" in view.columns or "reason" not in df.columns:
        return []
    return [_cell(f"{shown_identity(r['team'])}/{shown_identity(r['name'])}: {r['reason']}")
            for _, r in df.iterrows() if _cell(r["reason"])]
