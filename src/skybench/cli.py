"""The ``skybench`` command line: one command per pipeline stage."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from skybench.escape import escape
from skybench.release import layout  # names only: keeps the CLI start light

if TYPE_CHECKING:
    import pandas as pd

    from skybench.harness.submission import Submission
    from skybench.testkey import ReleaseKey
    from skybench.tracks import Track

class _App(typer.Typer):
    """The ``skybench`` app: an OSError a command does not handle itself (a full or read-only disk, a lost mount)
    is one line naming the file, not a traceback."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:  # type: ignore[override]
        register = super().command(*args, **kwargs)

        def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
            register(self.guarded(fn))
            return fn

        return decorator

    def add_typer(self, typer_instance: typer.Typer, *args: Any, **kwargs: Any) -> None:
        """A sub-app's commands (``skybench admin ...``) guarded alike, at any depth."""
        groups = [typer_instance]
        while groups:
            group = groups.pop()
            for info in group.registered_commands:
                if info.callback is not None:
                    info.callback = self.guarded(info.callback)
            groups += [g.typer_instance for g in group.registered_groups if g.typer_instance is not None]
        super().add_typer(typer_instance, *args, **kwargs)

    @staticmethod
    def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def run(*a: Any, **k: Any) -> Any:
            try:
                return fn(*a, **k)
            except OSError as exc:
                _fail(f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror
                      else exc.strerror or str(exc))

        return run


app = _App(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
           help="Reproducible benchmarks and challenges for deep learning in astronomy.")


def _shown(text: object) -> str:
    """``text`` with control characters (terminal escapes, bidi overrides) escaped; newlines kept."""
    return "\n".join(escape(line) for line in str(text).splitlines())


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.secho(f"error: {_shown(message)}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _track(name: str) -> Track:
    """``load_track(name)``, or one error line naming the known tracks (a typo is not a traceback)."""
    from skybench.tracks import load_track

    try:
        return load_track(name)
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))


@app.command()
def simulate(track: str, out: Annotated[Path, typer.Option(help="release folder to write")],
             profile: str = "demo", seed: int = 0,
             size: Annotated[int | None, typer.Option(help="number of test cut-outs (scales the rest)")] = None,
             backend: Annotated[str, typer.Option(help="auto, numpy, torch-cpu or torch-cuda")] = "auto",
             generator: Annotated[str, typer.Option(
                 help="auto (Philox on a GPU where the track has it, else PCG64), pcg64 or philox")] = "auto",
             chunk_size: Annotated[int | None, typer.Option(
                 help="objects simulated together (default: 32 on the CPU, 2048 on a GPU; less if the GPU's memory "
                      "runs out)")] = None,
             key_file: Annotated[Path | None, typer.Option(
                 help="the organiser's private test-set key (default: $SKYBENCH_KEY_DIR/PROFILE.key, else "
                      "secrets/PROFILE.key); needed by every profile but demo")] = None,
             create_key: Annotated[bool, typer.Option(
                 help="create the key file if it does not exist")] = True) -> None:
    """Simulate a track into a versioned release (manifest, public and hidden folders)."""
    import signal

    from skybench.release import ReleaseError
    from skybench.simulate import simulate_release

    def stop(signum: int, _frame: object) -> None:  # a SIGTERM (`dvc repro` stopped): the writer cleans up first
        raise SystemExit(128 + signum)

    before = signal.signal(signal.SIGTERM, stop)
    try:
        path = simulate_release(track, out, profile=profile, seed=seed, size=size, backend=backend,
                                generator=generator, chunk_size=chunk_size, progress=sys.stderr.isatty(),
                                key_file=key_file, create_key=create_key,
                                real_set=True)  # the track's real set, folded in (a library call opts in)
    except (FileNotFoundError, KeyError, ValueError, ReleaseError) as exc:
        _fail(str(exc))
    except OSError as exc:  # a full or read-only disk: write_release removed what it had written
        _fail(f"cannot write the release {out}: {exc.strerror or exc} ({exc.filename or out}); {out} is as it was")
    finally:
        signal.signal(signal.SIGTERM, before)
    typer.echo(f"wrote {path}")
    from skybench.release.verify import read_manifest

    real = read_manifest(path).get("real_set") or {}
    if real.get("why"):  # the track's real set was not folded in: its real_* metrics will be empty
        typer.echo(f"note: the track's real set {real.get('path')} is not in this test set ({real['why']}): the "
                   "real_* metrics stay empty; make it first (`dvc repro` runs its import stage), then simulate "
                   "again", err=True)


@app.command()
def verify(release: Path) -> None:
    """Re-hash a release and name every file that does not match its manifest."""
    from skybench.release import ReleaseError, verify_release

    try:
        problems = verify_release(release)
    except ReleaseError as exc:
        _fail(str(exc))
    for p in problems:
        typer.echo(p, err=True)
    if problems:
        _fail(f"{release}: {len(problems)} file(s) do not match the manifest")
    typer.echo(f"{release}: all files match the manifest")


@app.command()
def validate(folder: Path, release: Annotated[Path | None, typer.Option(help="release to take inputs from")] = None,
             score: Annotated[bool, typer.Option(
                 help="also run the model on the public validation split and print the track's metrics")] = False,
             limit: Annotated[int | None, typer.Option(help="--score: at most this many validation inputs")] = None,
             ) -> None:
    """Check a submission as the evaluation will run it: schema, loading in the sandbox, and outputs on public
    inputs at the track's evaluation batch size and at a small odd one. --score: metrics on the public val split."""
    from skybench.harness.submission import SubmissionError, load_submission
    from skybench.release import ReleaseError
    from skybench.tracks import load_track

    try:
        sub = load_submission(folder)
        track = load_track(sub.spec.track)
    except (SubmissionError, FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    try:  # the schema check above needs the core install only; running the model needs the [eval] extra
        import skybench.harness.validate  # noqa: F401
        from skybench.tracks import default_release, for_release
    except ModuleNotFoundError as exc:
        _fail(f"{_shown(folder)}: the schema is valid, but running the model needs the evaluation extras "
              f"({exc.name} is missing): pip install 'skybench[eval]'")
    release = release or default_release(track)
    if not layout.is_release(release):
        _fail(f"no release at {release}; make one with `skybench simulate {track.name} --out {release}` "
              "or pass --release")
    try:
        _validate(folder, sub, for_release(track, release), release, score, limit)
    except (ReleaseError, ValueError, OSError) as exc:  # the model's failures are results: this is the release's
        from skybench.harness.evaluate import one_line

        _fail(f"{release}: the release could not be read ({one_line(exc)}); check it with "
              f"`skybench verify {release}`")


def _validate(folder: Path, sub: Submission, track: Track, release: Path, score: bool, limit: int | None) -> None:
    import tempfile

    from skybench.harness.submission import sandboxed_predict
    from skybench.harness.validate import SMALL_BATCH, batch_hint, check_batches, rerun_problem, score_val

    if sub.spec.format == "predictions":  # no code runs: the CSV is checked against the public test ids
        with tempfile.TemporaryDirectory(prefix="skybench-validate-") as scratch:
            res = sandboxed_predict(sub, release, scratch=Path(scratch), track=track)
        if not res.ok:
            _fail(f"{folder}: {res.reason}")
        typer.echo(f"{_shown(folder)}: OK - predictions CSV covers the {len(res.ids)} public test ids")
        if score:
            _fail("--score needs a model: a predictions CSV holds test ids only, not the validation split's")
        return
    with tempfile.TemporaryDirectory(prefix="skybench-validate-") as scratch:
        checks = check_batches(sub, track, release, Path(scratch))
    for c in checks:
        r = c.result
        status = (f"OK - {r.predictions.shape} finite values" if r.ok and r.predictions is not None
                  else f"FAILED - {r.reason}")
        typer.echo(_shown(f"{folder}: batch size {c.batch_size} ({c.n} inputs, device {r.device}): {status}"))
    if not all(c.result.ok for c in checks):
        hint = batch_hint(checks)
        _fail(f"{folder}: the model fails in the sandbox" + (f"; hint: {hint}" if hint else "")
              + f" (the evaluation runs it at batch size {track.evaluation.batch_size}, the last batch smaller; "
              f"validate also tries {SMALL_BATCH})")
    if why := rerun_problem(track.task, checks):  # the evaluation runs some inputs again and fails this
        _fail(f"{folder}: {why}")
    typer.echo(f"{_shown(folder)}: OK - {sub.spec.format} model for {track.name} passes at batch sizes "
               f"{', '.join(str(c.batch_size) for c in checks)}")
    if score:
        with tempfile.TemporaryDirectory(prefix="skybench-score-") as out:
            local = score_val(sub, track, release, Path(out), limit=limit)
        if not local.result.ok:
            _fail(f"{folder}: on the validation split: {local.result.reason}")
        primary = track.metrics.primary
        typer.echo(f"{_shown(folder)}: public validation split ({local.n} objects, not the test set; no quota used):")
        for name in [primary, *(m for m in track.metrics.report if m != primary)]:
            if name in local.metrics:
                typer.echo(f"  {name} = {local.metrics[name]:.4f}" + ("  (primary)" if name == primary else ""))


@app.command()
def evaluate(folders: Annotated[list[Path] | None, typer.Argument(
                 help="submission folders (default: every one under submissions/ and baselines/ for TRACK)")] = None,
             track: Annotated[str, typer.Option(help="track to evaluate on")] = ...,  # type: ignore[assignment]
             release: Annotated[Path | None, typer.Option(help="release folder (default releases/TRACK)")] = None,
             out: Annotated[Path | None, typer.Option(help="where evaluation records go")] = None,
             log: Annotated[bool, typer.Option(help="publish to MLflow right away")] = True,
             force: Annotated[bool, typer.Option(help="re-evaluate unchanged submissions")] = False,
             examples: Annotated[bool, typer.Option(help="with no FOLDERS: include submissions/examples/")] = True,
             executor: Annotated[str, typer.Option(
                 help="where inference runs: local, or ray ($RAY_ADDRESS, else a local Ray instance)")] = "local",
             shards: Annotated[int | None, typer.Option(help="ray: shards per submission (default: GPUs or CPUs)")]
             = None) -> None:
    """Evaluate submissions on the hidden test labels, in the sandbox, and log them to MLflow."""
    from skybench.harness.evaluate import INFRASTRUCTURE, discover_submissions
    from skybench.harness.evaluate import evaluate as run
    from skybench.release import ReleaseError

    if executor not in ("local", "ray"):
        _fail(f"unknown executor {executor!r}; choose local or ray")
    options = {"shards": shards} if executor == "ray" else {}
    if missing := [str(f) for f in folders or () if not f.is_dir()]:  # a typo: not a FAILED entry on the board
        _fail(f"no such submission folder: {', '.join(missing)}; nothing evaluated")
    try:
        outcomes = run(folders or discover_submissions(track, examples=examples), track, release, out=out,
                       publish=log, force=force,
                       executor=executor, executor_options=options)
    except (ReleaseError, OSError, ValueError) as exc:  # OSError: a read-only or full --out, before any ran
        _fail(f"{exc}; nothing was evaluated" if isinstance(exc, OSError) else str(exc))
    from skybench.harness.visibility import participant_view
    from skybench.tracks import load_track

    t = load_track(track)
    for o in outcomes:  # the console may be a CI log teams read: only the participant view's metrics
        primary = next(iter(participant_view(t, o.metrics).items()), None)
        score = f" {primary[0]}={primary[1]:.4f}" if primary else ""
        line = f"{o.status:9s} {o.team}/{o.name}{score}" + (f"  ({o.reason})" if o.reason else "")
        typer.secho(_shown(" ".join(line.split())), fg=typer.colors.RED if o.status == "FAILED" else None)
    machine = [o for o in outcomes if o.failure_kind == INFRASTRUCTURE]
    pending = [o for o in outcomes if o.unpublished]
    if pending:
        where = pending[0].record.parent if pending[0].record else "the evaluations folder"
        message = (f"{len(pending)} evaluation record(s) NOT logged to MLflow ({pending[0].unpublished}); predictions "
                   f"and records are kept on disk; publish them later with `skybench log {where} --track {track}`")
        if not machine:
            _fail(message, 2)
        typer.secho(f"error: {_shown(message)}", fg=typer.colors.RED, err=True)
    if machine:  # not 0: `dvc repro` must not lock this stage, so that its next run retries them
        _fail(f"{len(machine)} submission(s) failed through this machine's fault, not their own "
              f"({', '.join(f'{o.team}/{o.name}' for o in machine[:3])}{', ...' if len(machine) > 3 else ''}); "
              "their FAILED records say so; run again to retry them", 3)


@app.command("index-submissions")
def index_submissions(out: Path = Path("results/submissions.json")) -> None:
    """Write every team folder the evaluate stages may run, with its sha256, to OUT: the pipeline's evaluate stages
    depend on this file, not on submissions/ itself (docs/SECURITY.md)."""
    import json

    from skybench.common import write_whole
    from skybench.harness.evaluate import submissions_index

    index = submissions_index()
    write_whole(out.parent, {out.name: json.dumps(index, indent=1, sort_keys=True) + "\n"})
    typer.echo(f"wrote {out}: {len(index)} team folder(s)")


@app.command("log")
def log_(evaluations: Path, track: Annotated[str | None, typer.Option()] = None) -> None:
    """Publish evaluation records to MLflow (idempotent; also logs records kept during an outage)."""
    from skybench.harness.record import RecordError
    from skybench.tracking import unreachable
    from skybench.tracking.log import publish_all

    if track is not None:
        _track(track)
    if down := unreachable():  # else MLflow's retries and back-off keep it silent for minutes
        _fail(f"{down}; nothing published, the records in {evaluations} are kept")
    try:
        new, old = publish_all(evaluations, track)
    except RecordError as exc:  # the valid records were published; these were not
        _fail(str(exc))
    typer.echo(f"{evaluations}: {new} run(s) logged, {old} already in MLflow")


@app.command()
def leaderboard(track: str,
                format: Annotated[str, typer.Option("--format", help="table, markdown, csv or html")] = "table",
                release: Annotated[Path | None, typer.Option(help="rank only runs on this release")] = None,
                write: Annotated[Path | None, typer.Option(help="also write leaderboard.md, metrics.json")] = None,
                all_releases: Annotated[bool, typer.Option(help="rank runs of every release")] = False,
                publish: Annotated[Path | None, typer.Option(
                    help="first publish the evaluation records in this folder to MLflow (as `skybench log`)")] = None,
                by: Annotated[str | None, typer.Option(
                    "--by", help="one column per bin of this stratum (a column of the track's strata:)")] = None,
                metric: Annotated[str | None, typer.Option(
                    help="with --by: the per-bin metric to show (default: the stratum's)")] = None,
                columns: Annotated[str | None, typer.Option(
                    help="table: these columns, comma-separated (default: the track's; <metric>_ci is its interval)")]
                = None,
                all_columns: Annotated[bool, typer.Option("--all", help="table: every column")] = False,
                ) -> None:
    """Print the ranking of a track (earliest submission wins ties; failed entries are listed, unranked)."""
    from skybench.tracking import leaderboard as lb
    from skybench.tracking import unreachable
    from skybench.tracks import default_release
    from skybench.twins import check_linked_phases

    t = _track(track)
    try:  # a closed board shows private scores: not while a linked track (same objects) takes submissions
        check_linked_phases(t)
    except ValueError as exc:
        _fail(str(exc))
    if down := unreachable():  # else MLflow's retries and back-off keep it silent for minutes
        _fail(down)
    unpublished = ""
    if publish is not None:
        from skybench.harness.record import RecordError
        from skybench.tracking.log import publish_all

        try:
            new, old = publish_all(publish, track)
            typer.echo(f"{publish}: {new} run(s) logged, {old} already in MLflow")
        except RecordError as exc:  # the others were published: the board is written, then exit 2 (below)
            unpublished = str(exc)
    rel = release or default_release(t)
    if release is not None and not all_releases and not layout.is_release(release):
        _fail(f"{release}: not a release (no manifest); give the release the entries were evaluated on, or "
              "--all-releases")
    sha = None if all_releases or not layout.is_release(rel) else _release_sha(rel)
    hidden = rel if sha is not None else None  # rank intervals need one release's hidden test split
    if write:
        try:  # a full or read-only disk: one line; write_results keeps the previous board whole
            lb.write_results(t, write, release_sha256=sha, release=hidden)
            _copy_roc_curves(write / "evaluations", write / "roc")
        except OSError as exc:
            _fail(f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror or str(exc))
        _write_strata_plot(t, sha)
        _annotate_ui(t, sha, hidden)
    try:
        board = (lb.by_leaderboard(t, by, metric=metric, release_sha256=sha, release=hidden) if by
                 else lb.leaderboard(t, release_sha256=sha, release=hidden))
        if format == "table" and not by:
            _terminal_table(t, board, columns, all_columns)
        elif columns is not None or all_columns:
            _fail("--columns and --all choose the table's columns; " + (
                "--by shows one column per bin" if by else f"the {format} form keeps every column"))
        else:
            out = lb.render(board, format)  # type: ignore[arg-type]
            typer.echo(out + lb.strata_html(t, release_sha256=sha) if format == "html" else out)
    except ValueError as exc:
        _fail(str(exc))
    if unpublished:  # not 0, as evaluate's unlogged records: `dvc repro` must not lock a board without them
        _fail(f"{unpublished}\nthe board was written without them; mend or remove those records and run again", 2)


def _release_sha(rel: Path) -> str:
    """The digest runs on the release ``rel`` carry; one line and exit 1 when its manifest is not a release's (a
    corrupt or old one matched no run, and the board came out empty)."""
    from skybench.release import ReleaseError, read_manifest, release_digest

    try:
        read_manifest(rel)
    except ReleaseError as exc:
        _fail(str(exc))
    return release_digest(rel)


def _write_strata_plot(t: Track, sha: str | None) -> None:
    """``strata.png`` (small multiples of the track's strata, small bins included) into the organiser's MLflow
    experiment only: nothing beside the published leaderboard in ``write``."""
    import tempfile

    from skybench.tracking import leaderboard as lb

    with tempfile.TemporaryDirectory(prefix="skybench-strata-") as tmp:
        if (png := lb.plot_strata(t, Path(tmp) / lb.STRATA_PLOT, release_sha256=sha)) is not None:
            lb.log_strata_plot(t, png, release_sha256=sha)


@app.command()
def compare(track: str, a: Annotated[str, typer.Argument(help="an entry: team/name, or name if only one team has it")],
            b: Annotated[str, typer.Argument(help="another entry")],
            release: Annotated[Path | None, typer.Option(help="the release both were evaluated on")] = None) -> None:
    """Paired bootstrap comparison of two leaderboard entries: the difference of the primary metric on the part
    of the test set the leaderboard ranks on, its 95% interval and a two-sided p-value."""
    from mlflow.tracking import MlflowClient

    from skybench.release.reader import open_release
    from skybench.tracking import leaderboard as lb
    from skybench.tracking import ranks, tracking_uri, unreachable
    from skybench.tracks import default_release

    t = _track(track)
    rel = release or default_release(t)
    if not layout.is_release(rel):
        _fail(f"{rel}: not a release; give the release both entries were evaluated on with --release")
    if down := unreachable():  # else MLflow's retries and back-off keep it silent for minutes
        _fail(down)
    board = lb.finished_entries(t, release_sha256=_release_sha(rel))
    try:
        picked = [lb.find_entry(board, who, t.name) for who in (a, b)]
        c = MlflowClient(tracking_uri=tracking_uri())
        entries = [(key, ranks.load_predictions(c, run_id)) for key, run_id in picked]
        result = ranks.compare(t, open_release(rel).hidden("test"), entries[0], entries[1])
    except (LookupError, OSError, ValueError) as exc:
        _fail(str(exc))
    typer.echo(_shown(result.summary(t.metrics.higher_is_better)))


@app.command("compare-training")
def compare_training(
        evaluations: Annotated[list[Path], typer.Option(help="results/<track>/evaluations (repeatable; the first is "
                                                             "judged)")],
        before: Annotated[str, typer.Option(help="the baseline trained on its track's release")] = "resnet",
        after: Annotated[str, typer.Option(help="the same baseline trained on a mixture (--also)")] = "resnet-mix",
        write: Annotated[Path | None, typer.Option(help="also write the text to this file")] = None) -> None:
    """Did training on a mixture raise real_lens_recall and lower real_fpr? Two baselines' records compared, with
    their 95% intervals (skybench/tracking/mixture_report.py)."""
    from skybench.tracking.mixture_report import compare as run

    text = run(evaluations, before, after)
    typer.echo(text, nl=False)
    if write is not None:
        from skybench.common import write_whole

        write_whole(write.parent, {write.name: text})


def _terminal_table(track: Track, board: pd.DataFrame, columns: str | None, all_columns: bool) -> None:
    """Print the track's default columns of ``board`` (or ``columns``, or all), then the failure reasons the
    table leaves out, one line each."""
    from skybench.tracking import leaderboard as lb

    chosen = None if columns is None else [c.strip() for c in columns.split(",") if c.strip()]
    view = lb.terminal_view(track, board, chosen, all_columns)
    typer.echo(lb.render(view, "table"), nl=False)
    for note in lb.failure_notes(board, view):
        typer.echo(f"FAILED {note}")


def _annotate_ui(track: Track, release_sha256: str | None, release: Path | None = None) -> None:
    """Name and tag the leaderboard's runs for the MLflow UI (rank, group, primary metric first)."""
    from skybench.tracking import leaderboard as lb
    from skybench.tracking.ui import annotate_runs

    board = lb.leaderboard(track, release_sha256=release_sha256, release=release)
    annotate_runs(track, board, release_sha256=release_sha256)


def _copy_roc_curves(evaluations: Path, out: Path) -> None:
    """One ROC csv per evaluated submission, in one folder, for `dvc plots show`: the participant's curve
    (public part, fixed FPRs; ``roc_public.csv``), never the organiser's full one."""
    import shutil

    from skybench.common import swap_in

    new = out.with_name(f".{out.name}.new-{os.getpid()}")
    try:  # built beside the old folder, then swapped in: a full disk leaves the old curves whole
        new.mkdir(parents=True)
        for roc in sorted(evaluations.glob("*/roc_public.csv")):
            if not roc.parent.name.startswith("."):  # not a record being written
                shutil.copyfile(roc, new / f"{roc.parent.name}.csv")
        swap_in(new, out)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write the ROC curves in {out} ({exc.strerror or exc}); the previous ones "
                                 "are kept") from exc
    finally:
        shutil.rmtree(new, ignore_errors=True)


@app.command()
def ui(port: int = 5000, host: Annotated[str, typer.Option(help="address to serve on")] = "127.0.0.1",
       serve: Annotated[bool, typer.Option(help="start the UI (--no-serve: only tag the runs, print the URLs)")]
       = True) -> None:
    """Start MLflow's UI on the project's tracking store; print each track's leaderboard URL (runs view, best
    first), with runs named by rank, group and primary metric."""
    import subprocess

    from skybench.tracking import tracking_uri, unreachable
    from skybench.tracking.ui import prepare

    if down := unreachable():
        _fail(down)
    uri = tracking_uri()
    remote = uri.startswith(("http://", "https://"))  # a tracking server is its own UI
    base = uri if remote else f"http://{host}:{port}"
    for experiment, url in prepare(base):
        typer.echo(f"{experiment}: {url}")
    if remote or not serve:
        return
    typer.echo(f"MLflow UI for {uri} on {base}")
    subprocess.run([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host,
                    "--port", str(port)], check=False)


def _real_data(data: Path) -> bool:
    """Whether the real-data folder is there (without it, offline, the real sets are empty: a documented mode);
    exits with the files that are missing or changed when it is there but damaged, before anything is written."""
    from skybench.release.verify import verify_real_data

    if not data.exists():
        return False
    if problems := verify_real_data(data):
        shown = "\n  ".join(problems[:10]) + (f"\n  and {len(problems) - 10} more" if len(problems) > 10 else "")
        _fail(f"{data}: the real data does not match its manifest, so nothing was written:\n  {shown}\n"
              f"pull it again (`dvc pull`), or remove {data} to build without real data")
    return True


@app.command("import-real-lenses")
def import_real_lenses(data: Path = Path("data"), out: Path = Path("releases/real-hst-lenses"),
                       track: str = "lens-space", seed: int = 0) -> None:
    """Turn the real HST lenses in data/ into a lens-space evaluation set (empty if data/ is missing)."""
    from skybench.release import write_release
    from skybench.tasks.lens.real import import_real_lenses as run

    try:
        if not _real_data(data):
            raise FileNotFoundError(f"no folder {data}")
        path = run(data, track, out, seed=seed, progress=sys.stderr.isatty())
    except FileNotFoundError as exc:
        typer.echo(f"real data not available ({exc}); writing an empty real-lens set to {out}")
        path = write_release(out, info={"track": track, "task": "lens", "profile": "real-hst", "seed": seed,
                                        "note": "real data was not available"},
                             counts={}, image_shape=(1, 101, 101), make_chunks=lambda s, r: iter(()),
                             label_columns=("is_lens",), progress=False)
    typer.echo(f"wrote {path}")


# The test-set key a real set is imported under: that of the releases it is folded into (skybench.testkey).
_REAL_PROFILE_HELP = "profile of the releases it is folded into: its test-set key draws the noise (demo: public)"
_REAL_KEY_HELP = "the organiser's test-set key (default: $SKYBENCH_KEY_DIR/PROFILE.key, else secrets/PROFILE.key)"


def _real_key(profile: str, key_file: Path | None, out: Path) -> ReleaseKey:
    from skybench.testkey import profile_key

    try:
        return profile_key(profile, key_file=key_file, out=out)
    except ValueError as exc:
        _fail(str(exc))


@app.command("import-real-set")
def import_real_set(track: Annotated[str, typer.Argument(help="lens track: lens-space or lens-ground")],
                    data: Path = Path("data"),
                    out: Annotated[Path | None, typer.Option(help="default releases/real-TRACK")] = None,
                    seed: int = 0, profile: Annotated[str, typer.Option(help=_REAL_PROFILE_HELP)] = "demo",
                    key_file: Annotated[Path | None, typer.Option(help=_REAL_KEY_HELP)] = None) -> None:
    """A lens track's real evaluation set: real lenses (where data/ has them) and real non-lenses from
    data/galaxies, in the track's format and noise (empty if data/ is missing), its random draws from the test-set
    key of --profile (a private one but for demo, so a team cannot rebuild it and find it in the test stream)."""
    from skybench.release import write_release
    from skybench.tasks.lens.real import import_real_set as run
    from skybench.tracks import load_track

    out = out if out is not None else Path("releases") / f"real-{track}"
    key = _real_key(profile, key_file, out)
    try:
        if not _real_data(data):
            raise FileNotFoundError(f"no folder {data}")
        path = run(data, track, out, seed=seed, progress=sys.stderr.isatty(), key=key)
    except FileNotFoundError as exc:
        typer.echo(f"real data not available ({exc}); writing an empty real set to {out}")
        t = load_track(track)
        size = t.cutout.size if t.cutout is not None else 0
        path = write_release(out, info={"track": t.name, "task": t.task, "profile": "real-set", "seed": seed,
                                        "test_key": key.real_set_entry(f"real:{t.name}"),
                                        "note": "real data was not available"},
                             counts={}, image_shape=(len(t.band_names), size, size), make_chunks=lambda s, r: iter(()),
                             label_columns=("is_lens",), progress=False)
    typer.echo(f"wrote {path}")


@app.command("import-bologna")
def import_bologna(src: Annotated[Path, typer.Argument(help="folder of Lens Finding Challenge 1.0 FITS files")],
                   track: Annotated[str, typer.Option(help="lens-space (VIS) or lens-ground (SDSS U,G,R,I)")] = ...,  # type: ignore[assignment]
                   out: Annotated[Path, typer.Option(help="release folder to write")] = ...,  # type: ignore[assignment]
                   classifications: Annotated[Path | None, typer.Option(
                       help="labels CSV (ID, is_lens); default SRC/classifications.csv")] = None) -> None:
    """Turn Strong Lens Finding Challenge 1.0 files into a test-only release that `evaluate --release` scores."""
    from skybench.tasks.lens.bologna import BolognaError
    from skybench.tasks.lens.bologna import import_bologna as run

    try:
        path = run(src, track, out, classifications=classifications, progress=sys.stderr.isatty())
    except (BolognaError, FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    typer.echo(f"wrote {path}")


@app.command("export-bologna")
def export_bologna(release: Path, out: Annotated[Path, typer.Option(help="folder to write")] = ...,  # type: ignore[assignment]
                   labels: Annotated[bool, typer.Option(
                       help="also write classifications.csv with the hidden test labels (a release made with the "
                            "public demo key only: refused where they are secret)")] = False) -> None:
    """Write a release's test set in the Strong Lens Finding Challenge 1.0 layout (FITS per cut-out and band)."""
    from skybench.release import ReleaseError
    from skybench.tasks.lens.bologna import BolognaError
    from skybench.tasks.lens.bologna import export_bologna as run

    try:
        path = run(release, out, labels=labels)
    except (BolognaError, ReleaseError, FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    typer.echo(f"wrote {path}")


@app.command("import-sdss-mgs")
def import_sdss_mgs(data: Path = Path("data"), out: Path = Path("releases/photoz-sdss-mgs"),
                    track: str = "photoz-sdss-mgs", n_val: int = 500) -> None:
    """Turn the real SDSS MGS catalogue in data/photoz_sdss_mgs into the photoz-sdss-mgs release."""
    from skybench.tasks.photoz.real import import_sdss_mgs as run

    _real_data(data)
    try:
        path = run(data, track, out, n_val=n_val, progress=sys.stderr.isatty())
    except (FileNotFoundError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    typer.echo(f"wrote {path}")


@app.command("import-real-truth")
def import_real_truth(data: Path = Path("data"), out: Path = Path("releases/enhance-real"), track: str = "enhance",
                      seed: int = 0, profile: Annotated[str, typer.Option(help=_REAL_PROFILE_HELP)] = "demo",
                      key_file: Annotated[Path | None, typer.Option(help=_REAL_KEY_HELP)] = None) -> None:
    """Degrade the real HST galaxy images in data/ into the enhance track's real-truth set (empty without data/),
    its noise drawn from the test-set key of --profile (a private one but for demo)."""
    from skybench.tasks.enhance.real import empty_real_truth
    from skybench.tasks.enhance.real import import_real_truth as run

    key = _real_key(profile, key_file, out)
    try:
        if not _real_data(data):
            raise FileNotFoundError(f"no folder {data}")
        path = run(data, track, out, seed=seed, progress=sys.stderr.isatty(), key=key)
    except FileNotFoundError as exc:
        typer.echo(f"real data not available ({exc}); writing an empty real-truth set to {out}")
        path = empty_real_truth(track, out, seed=seed, note=str(exc), key=key)
    typer.echo(f"wrote {path}")


@app.command()
def realism(track: str, profile: str = "demo",
            seed: Annotated[int, typer.Option(help="photo-z: release seed; lens: seed of the simulated subset")] = 0,
            log: Annotated[bool, typer.Option(help="log the figures and the plot to MLflow")] = True,
            write: Annotated[Path | None, typer.Option(help="also write the report to this file")] = None,
            strict: Annotated[bool, typer.Option(help="exit 1 when a target is missed")] = False,
            release: Annotated[Path | None, typer.Option(help="lens: the simulated release (releases/TRACK)")] = None,
            real: Annotated[Path | None, typer.Option(help="lens: the real set (the track's real_set)")] = None,
            metrics: Annotated[Path | None, typer.Option(
                help="lens: the leaderboard's metrics.json (results/TRACK/metrics.json, else MLflow)")] = None) -> None:
    """How real a simulated track looks, by its task's realism module (``skybench.tasks.<task>.realism.report``).
    photo-z: colours against the real SDSS MGS train split (KS per colour, median g-r per redshift bin). lens:
    per-object statistics of simulated and real lenses and non-lenses, and the baselines' ranking on simulations
    against their real-data metrics. Prints the report, logs it and its plot to MLflow."""
    import importlib
    import inspect

    from skybench.tracks import load_track

    try:
        task = load_track(track).task
    except (FileNotFoundError, ValueError, KeyError) as exc:
        _fail(str(exc))
    try:
        module = importlib.import_module(f"skybench.tasks.{task}.realism")
    except ModuleNotFoundError as exc:
        if exc.name != f"skybench.tasks.{task}.realism":  # the module exists; something it imports does not
            raise
        _fail(f"track {track!r} is a {task} track, which has no realism report (the tasks with one have a "
              "skybench/tasks/<task>/realism.py with a report function: photoz, lens)")
    options = {"profile": profile, "seed": seed, "release": release, "real": real, "metrics": metrics}
    accepted = inspect.signature(module.report).parameters
    given = {k: v for k, v in options.items() if v is not None and k not in ("profile", "seed")}
    if profile != "demo":
        given["profile"] = profile
    if unknown := [k for k in given if k not in accepted]:
        _fail(f"--{', --'.join(unknown)}: not an option of the {task} realism report")
    try:
        text, passed, logged = module.report(track, log=log, **{k: v for k, v in options.items()
                                                                 if k in accepted and (v is not None)})
    except (FileNotFoundError, ValueError, KeyError) as exc:
        _fail(str(exc))
    typer.echo(text)
    if write is not None:
        from skybench.common import write_whole

        write_whole(write.parent, {write.name: text + "\n"})
    if logged:
        typer.echo(logged)
    if strict and not passed:
        raise typer.Exit(1)


@app.command("calibrate-photoz")
def calibrate_photoz(track: Annotated[str, typer.Argument(help="the photo-z track to fit")] = "photoz-catalog",
                     out: Annotated[Path, typer.Option(help="the calibration file the tracks name")]
                     = Path("calibration/photoz-population.yaml"),
                     seed: Annotated[int, typer.Option(help="release seed of the fitting sample")] = 0,
                     n: Annotated[int, typer.Option(help="simulated galaxies per evaluation")] = 8000,
                     max_evals: int = 400) -> None:
    """Fit the photo-z population (red sequence, blue cloud, red fraction) to the real MGS train split."""
    from skybench.tasks.photoz.calibrate import main as run

    try:
        run(["--track", track, "--out", str(out), "--seed", str(seed), "--n", str(n), "--max-evals", str(max_evals)])
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))


@app.command()
def report(releases: Annotated[Path, typer.Option(help="folder holding the releases")] = Path("releases")) -> None:
    """Summarise what the pipeline produced."""
    from skybench.tracking.report import print_report

    print_report(releases)


def main() -> None:  # pragma: no cover
    app()


# The challenge server: skybench serve, worker, admin (db, team, phase) and submit (skybench/server/cli.py).
from skybench.server.cli import register as _register_server  # noqa: E402

_register_server(app)
