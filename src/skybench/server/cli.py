"""The challenge server's commands: ``skybench serve``, ``worker``, ``admin ...`` and ``submit``.

Registered on the main ``skybench`` app by :func:`register`; heavy imports (FastAPI, SQLAlchemy) happen inside
the commands, so ``skybench --help`` and ``skybench submit`` stay light."""

from __future__ import annotations

import http.client
import io
import json
import os
import secrets
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    from sqlalchemy.orm import sessionmaker

    from skybench.server.config import ChallengeConfig

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="the challenge's challenge.yaml",
                                         envvar="SKYBENCH_CHALLENGE")]
DEFAULT_CONFIG = Path("challenge.yaml")
TOKEN_FILE = Path("~/.config/skybench/token")

admin = typer.Typer(no_args_is_help=True, help="Manage a challenge server's database, teams and phases.")
admin_db = typer.Typer(no_args_is_help=True, help="The server's database.")
admin_team = typer.Typer(no_args_is_help=True, help="Teams and their tokens.")
admin_phase = typer.Typer(no_args_is_help=True, help="Override the phase the dates in challenge.yaml give a track.")
admin.add_typer(admin_db, name="db")
admin.add_typer(admin_team, name="team")
admin.add_typer(admin_phase, name="phase")


def _fail(message: str, code: int = 1) -> NoReturn:
    from skybench.cli import _shown

    typer.secho(f"error: {_shown(message)}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _config(path: Path) -> ChallengeConfig:
    from skybench.server.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        _fail(str(exc))


def _sessions(path: Path) -> tuple[ChallengeConfig, sessionmaker]:
    from sqlalchemy.exc import DBAPIError

    from skybench.server.db import ClockSkewError, check_clock, make_engine, sessions, unreachable, upgrade

    cfg = _config(path)
    engine = make_engine(cfg.db_url)
    try:
        check_clock(engine, cfg.max_clock_skew_seconds)
        upgrade(engine)
    except ClockSkewError as exc:
        _fail(str(exc))
    except DBAPIError as exc:
        _fail(unreachable(engine, exc))
    return cfg, sessions(engine)


def serve(config: ConfigOpt = DEFAULT_CONFIG, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the challenge server (applies the database migrations first)."""
    from sqlalchemy.exc import DBAPIError

    from skybench.server.app import serve as run
    from skybench.server.db import ClockSkewError, make_engine, unreachable

    cfg = _config(config)
    try:
        run(cfg, host=host, port=port)
    except ClockSkewError as exc:
        _fail(str(exc))
    except DBAPIError as exc:  # at start (the schema, the clock); later the app answers 503 per request
        _fail(unreachable(make_engine(cfg.db_url), exc))


def worker(config: ConfigOpt = DEFAULT_CONFIG,
           executor: Annotated[str, typer.Option(help="local or ray (see skybench evaluate)")] = "local",
           poll: Annotated[float, typer.Option(help="seconds between looks at an empty queue")] = 5.0,
           once: Annotated[bool, typer.Option(help="stop when the queue is empty")] = False,
           track: Annotated[list[str] | None, typer.Option(
               help="take jobs of this track only (repeat for more); default: every track of the challenge whose "
                    "release is on this machine (releases/TRACK)")] = None) -> None:
    """Evaluate queued submissions one at a time, until interrupted."""
    import logging

    from skybench.server.worker import run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg, sessions = _sessions(config)
    for name in track or ():
        try:
            cfg.track(name)
        except KeyError as exc:  # not in the challenge: one line, not a worker that never takes a job
            _fail(str(exc.args[0]))
    run(cfg, sessions, poll_seconds=poll, executor=executor, once=once, tracks=track or None)


@admin_db.command("upgrade")
def db_upgrade(config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Create or upgrade the database schema (the server also does this at start)."""
    cfg, _ = _sessions(config)
    typer.echo(f"database {cfg.db_url.split('@')[-1]} is at the latest schema")


@admin_team.command("add")
def team_add(name: str, config: ConfigOpt = DEFAULT_CONFIG,
             members: Annotated[str, typer.Option(help="comma-separated member names or e-mails")] = "",
             is_admin: Annotated[bool, typer.Option("--admin", help="an organiser account, not a team")] = False
             ) -> None:
    """Add a team and print its token (shown this once; only its hash is stored)."""
    from skybench.server.auth import add_team

    _, sessions = _sessions(config)
    with sessions() as s:
        try:
            issued = add_team(s, name, members.split(","), admin=is_admin)
        except ValueError as exc:
            _fail(str(exc))
    typer.echo(f"{'admin' if is_admin else 'team'} {name} added; its token (shown once, keep it secret):",
               err=True)
    typer.echo(issued.token)


@admin_team.command("token")
def team_token(name: str, config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Issue a new token for a team (the old one stops working) and print it once."""
    from skybench.server.auth import rotate_token

    _, sessions = _sessions(config)
    with sessions() as s:
        try:
            typer.echo(rotate_token(s, name))
        except ValueError as exc:
            _fail(str(exc))


@admin_phase.command("set")
def phase_set(track: str, phase: str, config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Put TRACK in PHASE (pending, open, closed or final) whatever the dates say."""
    from skybench import tracking
    from skybench.server import phases
    from skybench.server.config import PHASES

    cfg, sessions = _sessions(config)
    if phase not in PHASES:
        _fail(f"phase {phase!r}: one of {', '.join(PHASES)}")
    try:
        cfg.track(track)
    except KeyError as exc:
        _fail(str(exc.args[0]))
    if down := tracking.unreachable():  # the change keeps the board, read from MLflow (minutes of retries)
        _fail(f"{down}; {track} stays in its phase")
    with sessions() as s:
        old = phases.change_phase(s, cfg, track, phase, by="cli")
    kept = f" (the leaderboard of phase {old} is kept under {cfg.storage / 'leaderboards' / track})" \
        if old in ("open", "closed") and old != phase else ""
    typer.echo(f"{track}: phase {phase}{kept}")


@admin_phase.command("close")
def phase_close(track: str, config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Close TRACK: no new submissions."""
    phase_set(track, "closed", config)


@admin_phase.command("final")
def phase_final(track: str, config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Reveal TRACK's private leaderboard (each team's final entries rank on the private part)."""
    phase_set(track, "final", config)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Follows no redirect: urllib would send the token on to whatever host a redirect names."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _check_server_url(server: str, allow_http: bool) -> None:
    """The token goes in a header: only over https, or plain http to this machine (or with ``allow_http``)."""
    parts = urllib.parse.urlsplit(server)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        _fail(f"--server {server!r}: an http:// or https:// URL is required")
    if parts.scheme == "http" and not allow_http and parts.hostname not in ("localhost", "127.0.0.1", "::1"):
        _fail(f"--server {server!r}: plain http would send your team's token in clear text to {parts.hostname}; "
              "use its https:// URL (or --allow-http on a network you trust)")


def _token() -> str:
    token = os.environ.get("SKYBENCH_TOKEN", "").strip()
    if not token and TOKEN_FILE.expanduser().is_file():
        token = TOKEN_FILE.expanduser().read_text().strip()
    if not token:
        _fail(f"no token: set SKYBENCH_TOKEN or write your team's token to {TOKEN_FILE}")
    return token


def pack(folder: Path) -> bytes:
    """``folder`` as a .tar.gz of regular files and folders under one top folder (what the server accepts)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for p in sorted([folder, *folder.rglob("*")]):
            if p.is_symlink() or not (p.is_file() or p.is_dir()):
                raise ValueError(f"{p}: only regular files and folders can be submitted (no symlinks)")
            tar.add(p, arcname=(Path(folder.name) / p.relative_to(folder)).as_posix(), recursive=False)
    return buf.getvalue()


def _multipart(fields: dict[str, str], filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = secrets.token_hex(16)
    out = io.BytesIO()
    for k, v in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode())
    out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
              "Content-Type: application/gzip\r\n\r\n".encode())
    out.write(data)
    out.write(f"\r\n--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def _broke(url: str, server: str, exc: BaseException) -> NoReturn:
    _fail(f"{url}: the connection broke during the upload ({type(exc).__name__}: {exc}); the server may have "
          f"restarted. An upload without an answer may or may not have been queued: check "
          f"{server.rstrip('/')}/api/submissions, then submit again if it is not there")


def submit(folder: Path, server: Annotated[str, typer.Option(help="the challenge server's URL",
                                                             envvar="SKYBENCH_SERVER")],
           skip_validate: Annotated[bool, typer.Option(help="check the schema only, do not run the model")] = False,
           release: Annotated[Path | None, typer.Option(
               help="release for the local validation (default: releases/TRACK, else the published/TRACK a team "
                    "pulls)")] = None,
           allow_http: Annotated[bool, typer.Option(help="send the token over plain http to a host that is not "
                                                         "this machine")] = False) -> None:
    """Validate FOLDER locally, pack it and upload it; print the submission id and its status URL."""
    from skybench.harness.submission import SubmissionError, load_submission

    _check_server_url(server, allow_http)
    token = _token()
    try:
        sub = load_submission(folder)
    except SubmissionError as exc:
        _fail(str(exc))
    if not skip_validate:
        from skybench.cli import validate
        from skybench.tracks import project_root

        if release is None and not (project_root() / "releases" / sub.spec.track).exists():
            published = project_root() / "published" / sub.spec.track  # what a team pulls (`dvc pull published/...`)
            release = published if published.exists() else None
        validate(folder, release=release)
    try:
        data = pack(folder)
    except ValueError as exc:
        _fail(str(exc))
    body, ctype = _multipart({"track": sub.spec.track, "name": sub.spec.name}, f"{sub.spec.name}.tar.gz", data)
    url = server.rstrip("/") + "/api/submissions"
    req = urllib.request.Request(url, data=body, method="POST", headers={
        "Authorization": f"Bearer {token}", "Content-Type": ctype, "Content-Length": str(len(body))})
    try:
        with urllib.request.build_opener(_NoRedirect).open(req, timeout=600) as resp:
            status, raw = resp.status, resp.read(1 << 20)
    except urllib.error.HTTPError as exc:
        if 300 <= exc.code < 400:
            _fail(f"{url}: the server redirects ({exc.code}) to {exc.headers.get('Location')!r}; the token was not "
                  "sent on: give that URL as --server if you trust it")
        try:
            detail = json.load(exc).get("detail", exc.reason)
        except (ValueError, AttributeError):
            detail = exc.reason
        _fail(f"{url}: {exc.code} {detail}")
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ConnectionRefusedError):  # refused at connect: not a byte was sent
            _fail(f"{url}: cannot reach the server (connection refused: nothing listens there); nothing was "
                  "uploaded: check --server and that `skybench serve` runs")
        if not isinstance(exc.reason, ConnectionError):
            _fail(f"{url}: cannot reach the server ({exc.reason})")
        _broke(url, server, exc.reason)
    except (http.client.HTTPException, ConnectionError) as exc:  # after the body was sent: no answer came
        _broke(url, server, exc)
    try:  # a proxy's or captive portal's page answers 200 too
        answer = json.loads(raw)
        shown = f"id {answer['id']}, state {answer['state']}", f"{server.rstrip('/')}{answer['status_url']}"
    except (ValueError, KeyError, TypeError):
        _fail(f"{url}: answered {status} but not as a skybench server ({' '.join(repr(raw[:80])[2:-1].split())}); "
              "check --server, and your submissions' status on the server, before you upload again")
    typer.echo(f"submitted {sub.spec.name} to {sub.spec.track}: {shown[0]}")
    typer.echo(f"status: {shown[1]}")


def publish_release(
        track: str,
        remote: Annotated[str, typer.Option(help="the DVC remote teams pull from (`dvc remote add NAME URL`)")],
        project: Annotated[Path | None, typer.Option(help="the organiser's DVC project (default: skybench's)")] = None,
        release: Annotated[Path | None, typer.Option(help="the release (default: <project>/releases/TRACK)")] = None
) -> None:
    """Push the public part of TRACK's release (public splits, a manifest without hidden hashes) to REMOTE."""
    from skybench.server.publish import PublishError, publish

    try:
        dvcfile = publish(track, remote, project=project, release=release)
    except PublishError as exc:
        _fail(str(exc))
    typer.echo(f"published the public part of {track} to DVC remote {remote!r}; commit {dvcfile} so teams can "
               f"`dvc pull` or `dvc import` it")


def register(app: typer.Typer) -> None:
    """Add the server's commands to the ``skybench`` app."""
    app.command()(serve)
    app.command()(worker)
    app.command()(submit)
    app.command("publish-release")(publish_release)
    app.add_typer(admin, name="admin")
