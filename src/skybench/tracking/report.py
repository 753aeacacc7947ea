"""A short summary of what the pipeline produced, printed at the end of ``make run``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from skybench.release import ReleaseError, layout, read_manifest, verify_release


def print_report(releases: Path) -> None:
    console = Console(width=160)
    table = Table(title="Releases")
    for col in ("release", "track", "profile", "seed", "train", "val", "test", "label (train mean)",
                "verify"):
        table.add_column(col)
    for root in sorted(p for p in Path(releases).glob("*") if p.is_dir()):
        try:
            m = read_manifest(root)
        except ReleaseError as exc:
            table.add_row(Text(root.name), "-", "-", "-", "-", "-", "-", "-", Text(str(exc)))
            continue
        frac = "-"
        label = (m.get("label_columns") or [None])[0]  # is_lens: the lens fraction; z: the mean redshift
        meta = layout.public_meta_path(root, "train")
        if label and meta.is_file():
            frac = f"{pd.read_parquet(meta, columns=[label])[label].mean():.2f}"
        problems = verify_release(root)
        c = m["counts"]
        table.add_row(*map(Text, (root.name, m["track"], str(m.get("profile", "-")), str(m.get("seed", "-")),
                                  str(c.get("train", "-")), str(c.get("val", "-")), str(c.get("test", "-")), frac,
                                  "ok" if not problems else f"{len(problems)} problem(s)")))
    console.print(table)
    data = Path(releases).parent / "data"
    if (data / "README.md").is_file():
        n = sum(1 for p in data.rglob("*") if p.is_file())
        console.print(f"Real data: {escape(str(data))} ({n} files, pulled from the DVC remote)")
    else:
        console.print("Real data: not present (the DVC remote 'challenge' was not reachable)")
    _print_leaderboards(console, Path(releases))
    # the realism reports (stages realism-photoz, realism-lens@<track>: skybench realism TRACK --write ...)
    for path in sorted((Path(releases).parent / "results" / "realism").glob("*.txt")):
        console.print(Text(f"Realism ({path.name}):\n{path.read_text()}"))


def _print_leaderboards(console: Console, releases: Path) -> None:
    """The ranking of every track that has a release, on that release, from MLflow."""
    from skybench.release import release_digest
    from skybench.tracking import leaderboard as lb
    from skybench.tracking import tracking_uri
    from skybench.tracks import list_tracks, load_track

    for name in list_tracks():
        rel = releases / name
        if not layout.is_release(rel):
            continue
        track = load_track(name)
        board = lb.leaderboard(track, release_sha256=release_digest(rel), release=rel)
        console.print(escape(f"\nLeaderboard {name} ({track.metrics.primary}, release {rel}):"))
        if not len(board):
            print("  no evaluations yet")
            continue
        view = lb.terminal_view(track, board)  # the track's default columns, as `skybench leaderboard` prints
        print(lb.render(view, "table"), end="")
        for note in lb.failure_notes(board, view):
            print(f"FAILED {note}")
    console.print(escape("\n`skybench leaderboard TRACK --all` shows every metric, `--by COLUMN` one column per "
                         "bin of a stratum, `skybench compare TRACK A B` a paired difference."))
    console.print(escape(f"\nMLflow store: {tracking_uri()} (browse it with `skybench ui`)"))
