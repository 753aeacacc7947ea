"""The challenge server's HTML pages (server-rendered with Jinja2, autoescaped; no JavaScript).

    GET  /                          the tracks and their phases
    GET  /tracks/{track}            the public leaderboard (:func:`skybench.tracking.leaderboard.leaderboard`)
    GET  /login, POST /login        log in with the team token; POST /logout
    GET  /team                      the team's own submissions
    GET  /team/submissions/{id}     one of them, with its plot (404 for another team's id)
    GET  /submit, POST /submit      the upload form (the same store and queue as POST /api/submissions)

The session is a cookie (HttpOnly, SameSite=Strict, Secure over https) signed with itsdangerous and a secret
kept in the store (``<storage>/web-secret``, mode 0600); it holds the team id, the id of the session's row in
the database (deleted at log-out: a copy of the cookie stops working then too), a fingerprint of the team's
token hash (a rotated token ends every session at once) and a per-session CSRF token that every POST form
must send back in a hidden field; a POST whose ``Origin`` is another site is refused as well."""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import re
import secrets
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import delete, select
from starlette.datastructures import UploadFile

from skybench.harness.submission import SLUG
from skybench.server import intake, queue
from skybench.server.auth import AuthError, Busy, RateLimited, client_key, verify
from skybench.server.config import ChallengeConfig, Phase, shown_as_open
from skybench.server.db import STATES, Submission, Team, WebSession, utcnow
from skybench.server.storage import UploadError, read_upload_form

HERE = Path(__file__).parent
COOKIE = "skybench_session"
SESSION_SECONDS = 12 * 3600
MAX_SESSIONS = 20  # web sessions a team holds at once; a log-in past that ends its oldest
# No script at all, no framing, images and styles from this server only.
_CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; "
        "base-uri 'none'")

templates = Jinja2Templates(env=jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                                                   autoescape=True, undefined=jinja2.StrictUndefined))
router = APIRouter(include_in_schema=False)


class _Csrf(Exception):
    pass


# -- sessions ---------------------------------------------------------------------------------------------------
def _secret(storage: Path) -> bytes:
    """The server's signing secret: created once in the store, readable by the server's user only."""
    path = Path(storage) / "web-secret"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another server process made it first
        return path.read_bytes()
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_bytes(32))
    return path.read_bytes()


def _signer(request: Request) -> URLSafeTimedSerializer:
    state = request.app.state
    if getattr(state, "web_signer", None) is None:
        state.web_signer = URLSafeTimedSerializer(_secret(state.cfg.storage), salt="skybench-web-session")
    return state.web_signer


def _fingerprint(team: Team) -> str:
    return hashlib.sha256(team.token_hash.encode()).hexdigest()[:32]


def _session(request: Request) -> dict[str, Any]:
    """The request's session ({} when none or invalid); cached on the request."""
    if not hasattr(request.state, "web_session"):
        data: dict[str, Any] = {}
        raw = request.cookies.get(COOKIE)
        if raw:
            try:
                loaded = _signer(request).loads(raw, max_age=SESSION_SECONDS)
                data = loaded if isinstance(loaded, dict) else {}
            except BadSignature:
                data = {}
        request.state.web_session = data
        request.state.web_new_cookie = None
    return request.state.web_session


def _csrf(request: Request) -> str:
    """This session's CSRF token; a visitor without a session gets one (an anonymous session)."""
    sess = _session(request)
    if not isinstance(sess.get("csrf"), str):
        sess = {"csrf": secrets.token_urlsafe(32)}
        request.state.web_session = sess
        request.state.web_new_cookie = sess
    return sess["csrf"]


def _current_team(request: Request) -> Team | None:
    sess = _session(request)
    tid, fp, sid = sess.get("team"), sess.get("fp"), sess.get("sid")
    if not isinstance(tid, int) or not isinstance(fp, str) or not isinstance(sid, str):
        return None
    with request.app.state.sessions() as s:
        row = s.get(WebSession, sid)
        team = s.get(Team, tid) if row is not None and row.team_id == tid else None  # no row: logged out
    if team is None or not hmac.compare_digest(_fingerprint(team), fp):  # rotated token: logged out
        return None
    return team


def _open_session(request: Request, team: Team) -> str:
    """A new session row of ``team`` (its id goes in the cookie); removes the rows whose cookies have expired."""
    sid = secrets.token_urlsafe(32)
    with request.app.state.sessions() as s:
        s.execute(delete(WebSession).where(WebSession.created_at < utcnow() - timedelta(seconds=SESSION_SECONDS)))
        s.add(WebSession(id=sid, team_id=team.id))
        s.flush()
        old = select(WebSession.id).where(WebSession.team_id == team.id, WebSession.id != sid).order_by(
            WebSession.created_at.desc(), WebSession.id).offset(MAX_SESSIONS - 1)
        s.execute(delete(WebSession).where(WebSession.id.in_(old.scalar_subquery())))  # its oldest log-ins end
        s.commit()
    return sid


def _close_session(request: Request) -> None:
    """Forget this request's session on the server: its cookie, and every copy of it, no longer logs in."""
    sid = _session(request).get("sid")
    if isinstance(sid, str):
        with request.app.state.sessions() as s:
            s.execute(delete(WebSession).where(WebSession.id == sid))
            s.commit()


def _set_cookie(request: Request, response: Response, data: dict[str, Any] | None) -> None:
    secure = request.url.scheme == "https"
    if data is None:
        response.delete_cookie(COOKIE, path="/", secure=secure, httponly=True, samesite="strict")
        return
    response.set_cookie(COOKIE, _signer(request).dumps(data), max_age=SESSION_SECONDS, path="/", secure=secure,
                        httponly=True, samesite="strict")


def _check_post(request: Request, form_token: object) -> None:
    """Refuse a POST from another site: a foreign ``Origin``, or a CSRF token that is not this session's."""
    origin = request.headers.get("origin")
    if origin is not None:
        mine = f"{request.url.scheme}://{request.url.netloc}"
        parts = urlsplit(origin)
        if origin == "null" or f"{parts.scheme}://{parts.netloc}" != mine:
            raise _Csrf(f"this form was sent from another site ({origin}); use the form on {mine}")
    want = _session(request).get("csrf")
    if not isinstance(want, str) or not isinstance(form_token, str) or not hmac.compare_digest(want, form_token):
        raise _Csrf("the form's security token is missing or out of date; reload the page and send the form again")


# -- rendering ----------------------------------------------------------------------------------------------------
def _page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    team = context.pop("team", None) if "team" in context else _current_team(request)
    context = {"team": team, "csrf": _csrf(request), "challenge_tracks": list(request.app.state.cfg.tracks),
               **context}
    response = templates.TemplateResponse(request, name, context, status_code=status)
    if request.state.web_new_cookie is not None:
        _set_cookie(request, response, request.state.web_new_cookie)
    return response


def _error(request: Request, status: int, message: str) -> HTMLResponse:
    return _page(request, "error.html", status, message=message, code=status)


def _fmt(value: object) -> str:
    if value is None or value is _NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"  # a rounded public score shows as rounded
    return str(value)


try:
    import pandas as pd

    _NA: object = pd.NA
except ImportError:  # pragma: no cover - pandas is a core dependency
    _NA = object()


# -- the leaderboard ----------------------------------------------------------------------------------------------
def public_board(cfg: ChallengeConfig, track_name: str, phase: Phase, session: Any) -> dict[str, Any]:
    """The leaderboard of ``track_name`` as the public may see it in ``phase``: the public part of a split
    test set until the ``final`` phase (then the final entries on the private part, as the JSON API ranks them:
    :func:`skybench.server.phases.final_board`), rounded while ``open`` as the JSON API does. The ranking is
    :func:`skybench.tracking.leaderboard.leaderboard`'s (the CLI's), through the API's cache."""
    from skybench.server.phases import board as cached_board
    from skybench.server.phases import final_board, open_board, ranked_as_shown
    from skybench.tracking.leaderboard import scored_on
    from skybench.tracks import load_track

    track = load_track(track_name)
    track = track.model_copy(update={"evaluation": track.evaluation.model_copy(
        update={"phase": "closed" if phase == "final" else "open"})})
    board = (final_board(session, cfg, track_name) if phase == "final"
             else cached_board(session, cfg, track_name, "public"))
    if shown_as_open(phase):
        board = open_board(session, cfg, track_name, board)
    primary = track.metrics.primary
    # a report metric's interval (Task.interval_metrics, or <m>_ci_low / _ci_high listed too) goes in its cell, as
    # the primary's
    bounds = {f"{m}_ci_{b}" for m in (primary, *track.metrics.report) for b in ("low", "high")}
    report = [m for m in track.metrics.report if m != primary and m not in bounds]
    digits = cfg.open_digits if shown_as_open(phase) else None
    board = ranked_as_shown(board, track_name, digits)

    def num(v: object) -> str:
        if v is None or v is _NA or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
            return ""
        v = float(v)
        return f"{round(v, digits):.{digits}f}" if digits is not None else f"{v:.4f}"

    def cell(row: dict[str, Any], m: str) -> dict[str, str]:
        return {"value": num(row[m]), "ci_low": num(row.get(f"{m}_ci_low")), "ci_high": num(row.get(f"{m}_ci_high"))}

    ranked, failed = [], []
    for row in board.astype(object).to_dict("records"):
        p = cell(row, primary)
        entry = {"team": str(row["team"]), "name": str(row["name"]), "submitted": str(row["submitted"])[:19],
                 "primary": p["value"], "ci_low": p["ci_low"], "ci_high": p["ci_high"],
                 "report": [cell(row, m) for m in report],
                 "status": str(row["status"]), "reason": str(row["reason"] or "")}
        if row["rank"] is not _NA and row["rank"] is not None:
            ranked.append({"rank": int(row["rank"]), **entry})
        else:
            failed.append(entry)
    f = track.evaluation.public_fraction
    where = (f"the public {f:.0%} of the test set (private scores are revealed in the final phase)"
             if f is not None and phase != "final" else scored_on(track))
    return {"track": track, "primary": primary, "report": report, "ranked": ranked, "failed": failed,
            "scored_on": where, "higher": track.metrics.higher_is_better}


# -- plots ----------------------------------------------------------------------------------------------------------
def _run_of(sub: Submission, team_name: str) -> Any:
    """The participant MLflow run of this submission (``skybench-<track>``), or None."""
    from skybench.tracking import KIND_TAG, client, experiment_name

    if not re.fullmatch(r"[0-9a-f]{64}", sub.sha256 or "") or not re.fullmatch(SLUG, team_name):
        return None
    c = client()
    exp = c.get_experiment_by_name(experiment_name(sub.track))
    if exp is None:
        return None
    runs = c.search_runs([exp.experiment_id], f"tags.`{KIND_TAG}` = 'evaluation' and tags.submission_sha256 = "
                         f"'{sub.sha256}' and params.team = '{team_name}' and attributes.status = 'FINISHED'",
                         order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def plots(sub: Submission, team_name: str) -> list[str]:
    """Names of the PNG plots a participant may see of this submission (``participant_artifacts``)."""
    from skybench.harness.visibility import participant_artifacts
    from skybench.tracking import client
    from skybench.tracks import load_track

    if sub.state != "finished":
        return []
    try:
        run = _run_of(sub, team_name)
        if run is None:
            return []
        allowed = {n for n in participant_artifacts(load_track(sub.track)) if n.endswith(".png")}
        return sorted(a.path for a in client().list_artifacts(run.info.run_id) if a.path in allowed)
    except Exception:  # noqa: BLE001 - MLflow away: the page shows no plot rather than an error
        return []


def plots_shown(cfg: ChallengeConfig, phase: Phase) -> bool:
    """Whether teams see their plots now: not while the Ladder decides what an open phase shows (a public ROC
    curve is a score per point)."""
    return not (shown_as_open(phase) and cfg.open_board == "ladder")


def plot_bytes(sub: Submission, team_name: str, name: str) -> bytes | None:
    from skybench.tracking import client

    if name not in plots(sub, team_name):
        return None
    run = _run_of(sub, team_name)
    with tempfile.TemporaryDirectory(prefix="skybench-plot-") as tmp:
        return Path(client().download_artifacts(run.info.run_id, name, tmp)).read_bytes()


# -- pages ----------------------------------------------------------------------------------------------------------
@router.get("/", response_class=HTMLResponse)
def index(request: Request) -> HTMLResponse:
    cfg: ChallengeConfig = request.app.state.cfg
    with request.app.state.sessions() as s:
        tracks = [{"name": n, "open": c.open, "phase": queue.current_phase(s, cfg, n)} for n, c in cfg.tracks.items()]
    return _page(request, "index.html", tracks=tracks)


@router.get("/tracks/{track}", response_class=HTMLResponse)
def track_page(request: Request, track: str) -> HTMLResponse:
    cfg: ChallengeConfig = request.app.state.cfg
    if track not in cfg.tracks:
        return _error(request, 404, f"no track {track!r} in this challenge")
    try:
        request.app.state.board_read(request)
    except HTTPException as exc:
        page = _error(request, exc.status_code, str(exc.detail))
        page.headers.update(exc.headers or {})
        return page
    from skybench.server.phases import SHOWN

    with request.app.state.sessions() as s:
        phase = queue.current_phase(s, cfg, track)
        shown = SHOWN.get(s, cfg, "page", track, phase, lambda: public_board(cfg, track, phase, s))
    return _page(request, "track.html", phase=phase, open=cfg.tracks[track].open, **shown)


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> HTMLResponse:
    return _page(request, "login.html")


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    form = await request.form(max_files=0, max_fields=4, max_part_size=4096)
    try:
        _check_post(request, form.get("csrf"))
    except _Csrf as exc:
        return _error(request, 403, str(exc))
    token = form.get("token")
    client = client_key(request.client.host if request.client else None)
    state = request.app.state

    def check() -> Team:
        with state.sessions() as s:
            # the token cache too: logging in again and again with one token costs one argon2 check a minute
            return verify(s, token.strip() if isinstance(token, str) else None, client, state.limiter,
                          state.verified)

    try:
        team = await run_in_threadpool(check)
    except (RateLimited, Busy) as exc:
        r = _page(request, "login.html", 429 if isinstance(exc, RateLimited) else 503, message=str(exc))
        r.headers["Retry-After"] = str(exc.retry_after)
        return r
    except AuthError:
        return _page(request, "login.html", 401, message="that token is not valid; paste the token that "
                                                         "`skybench admin team add` printed for your team")
    sid = await run_in_threadpool(_open_session, request, team)
    response = RedirectResponse("/team", status_code=303)
    # A fresh CSRF token at log-in: one planted in the anonymous session is of no use.
    _set_cookie(request, response, {"team": team.id, "fp": _fingerprint(team), "sid": sid,
                                    "csrf": secrets.token_urlsafe(32)})
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    form = await request.form(max_files=0, max_fields=2, max_part_size=1024)
    try:
        _check_post(request, form.get("csrf"))
    except _Csrf as exc:
        return _error(request, 403, str(exc))
    await run_in_threadpool(_close_session, request)
    response = RedirectResponse("/", status_code=303)
    _set_cookie(request, response, None)
    return response


def _login_first(request: Request) -> RedirectResponse:
    return RedirectResponse("/login", status_code=303)


def _row(cfg: ChallengeConfig, sub: Submission, phase: Phase, session: Any,
         memo: dict[str, Any] | None = None) -> dict[str, Any]:
    from skybench.server.app import shown_metrics

    metrics = shown_metrics(cfg, sub, phase, session, memo) if sub.state == "finished" else {}
    when = (sub.finished_at or sub.failed_at or sub.superseded_at or sub.running_at or sub.queued_at
            or sub.received_at)
    return {"id": sub.id, "track": sub.track, "name": sub.name, "state": sub.state, "reason": sub.reason,
            "log": sub.log, "attempt": sub.attempt, "counted": sub.counted,
            "received": sub.received_at.isoformat(timespec="seconds") if sub.received_at else "",
            "moves": [(state, t.isoformat(timespec="seconds")) for state in STATES
                      if (t := getattr(sub, f"{state}_at")) is not None],
            "updated": when.isoformat(timespec="seconds") if when else "",
            "metrics": {k: _fmt(v) for k, v in sorted(metrics.items())}}


@router.get("/team", response_class=HTMLResponse)
def team_page(request: Request) -> Response:
    team = _current_team(request)
    if team is None:
        return _login_first(request)
    cfg: ChallengeConfig = request.app.state.cfg
    from sqlalchemy import select

    with request.app.state.sessions() as s:
        subs = s.scalars(select(Submission).where(Submission.team_id == team.id)
                         .order_by(Submission.received_at.desc())).all()
        phases = {n: queue.current_phase(s, cfg, n) for n in cfg.tracks}
        quotas = {n: queue.quota_left(s, cfg, team, n) for n, c in cfg.tracks.items() if c.open}
        memo: dict[str, Any] = {}  # each track's ladder climbed once for the whole list
        rows = [_row(cfg, x, phases.get(x.track, "open"), s, memo) for x in subs]
    return _page(request, "team.html", team=team, quotas=quotas, phases=phases, submissions=rows)


def _own(request: Request, team: Team, sub_id: str) -> Submission | None:
    with request.app.state.sessions() as s:
        sub = s.get(Submission, sub_id)
    return sub if sub is not None and sub.team_id == team.id else None  # another team's id: as a missing one


@router.get("/team/submissions/{sub_id}", response_class=HTMLResponse)
def submission_page(request: Request, sub_id: str) -> Response:
    team = _current_team(request)
    if team is None:
        return _login_first(request)
    sub = _own(request, team, sub_id)
    if sub is None:
        return _error(request, 404, f"no submission {sub_id!r} of team {team.name!r}")
    cfg: ChallengeConfig = request.app.state.cfg
    with request.app.state.sessions() as s:
        phase = queue.current_phase(s, cfg, sub.track)
        row = _row(cfg, sub, phase, s)
    return _page(request, "submission.html", team=team, sub=row,
                 plots=plots(sub, team.name) if plots_shown(cfg, phase) else [])


@router.get("/team/submissions/{sub_id}/plots/{name}")
def plot(request: Request, sub_id: str, name: str) -> Response:
    team = _current_team(request)
    sub = _own(request, team, sub_id) if team is not None else None
    if sub is not None:
        cfg: ChallengeConfig = request.app.state.cfg
        with request.app.state.sessions() as s:
            if not plots_shown(cfg, queue.current_phase(s, cfg, sub.track)):
                sub = None
    data = plot_bytes(sub, team.name, name) if sub is not None and team is not None else None
    if data is None:
        raise HTTPException(404, "no such plot")
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, no-store"})


@router.get("/submit", response_class=HTMLResponse)
def submit_form(request: Request) -> Response:
    team = _current_team(request)
    if team is None:
        return _login_first(request)
    return _submit_page(request, team)


def _submit_page(request: Request, team: Team, status: int = 200, message: str = "",
                 values: dict[str, str] | None = None) -> HTMLResponse:
    cfg: ChallengeConfig = request.app.state.cfg
    with request.app.state.sessions() as s:
        tracks = [{"name": n, "phase": queue.current_phase(s, cfg, n), "quota": queue.quota_left(s, cfg, team, n)}
                  for n, c in cfg.tracks.items() if c.open]
    return _page(request, "submit.html", status, team=team, tracks=tracks, message=message,
                 values=values or {"track": "", "name": ""}, max_mb=f"{cfg.upload.max_bytes / 1e6:.0f}")


@router.post("/submit", response_class=HTMLResponse)
async def submit(request: Request) -> Response:
    """The upload form: the JSON API's path (:func:`skybench.server.intake.accept`),
    after the session and (once the form is read) its CSRF token are checked; nothing is stored before."""
    team = await run_in_threadpool(_current_team, request)
    if team is None:  # before the body is read
        return _login_first(request)
    cfg: ChallengeConfig = request.app.state.cfg
    form = None
    values = {"track": "", "name": ""}
    try:
        with request.app.state.uploads.hold(team.id):
            form = await read_upload_form(request, cfg.upload.max_bytes)
            received = utcnow()  # the last byte is in: a slow upload cannot keep the time it began (quota day)
            sub = await _accept(request, team, form, received, values)
    except _Csrf as exc:
        return _error(request, 403, str(exc))
    except (UploadError, queue.Refused) as exc:
        return await run_in_threadpool(_submit_page, request, team, exc.status, str(exc), values)
    finally:
        if form is not None:
            await form.close()
    return RedirectResponse(f"/team/submissions/{sub.id}", status_code=303)


async def _accept(request: Request, team: Team, form: Any, received: Any, values: dict[str, str]) -> Submission:
    """The upload form's fields checked (``values``: what to show again), then :func:`intake.accept`."""
    cfg: ChallengeConfig = request.app.state.cfg
    _check_post(request, form.get("csrf"))
    track, name, upload = form.get("track"), form.get("name"), form.get("file")
    values.update(track=track if isinstance(track, str) else "", name=name if isinstance(name, str) else "")
    for key, value in (("track", track), ("entry name", name)):
        if not isinstance(value, str) or not re.fullmatch(SLUG, value) or ".." in value:
            raise UploadError(f"{key}: 1-64 letters, digits, '.', '_' or '-' required", 422)
    if not isinstance(upload, UploadFile) or not upload.filename:
        raise UploadError("choose the packed submission folder (.tar.gz or .zip) to upload", 422)
    assert isinstance(track, str) and isinstance(name, str)
    if track not in cfg.tracks or not cfg.tracks[track].open:
        raise UploadError(f"track {track!r} takes no submissions here", 404)
    return await run_in_threadpool(intake.accept, cfg, request.app.state.sessions, request.app.state.store,
                                   team.id, track, name, upload.file, received)


def install(app: FastAPI) -> None:
    """Add the pages, the stylesheet and the pages' security headers to ``app``."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.middleware("http")
    async def _headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        if not request.url.path.startswith("/static/"):
            # A page or answer of one session or token (a team's submissions, a form's CSRF token): never kept by
            # a shared cache (a proxy, a CDN) for another visitor, nor by the browser after log-out.
            response.headers.setdefault("Cache-Control", "no-store")
        if not request.url.path.startswith("/api/"):
            response.headers.setdefault("Content-Security-Policy", _CSP)
            response.headers.setdefault("X-Content-Type-Options", "nosniff")
            response.headers.setdefault("Referrer-Policy", "same-origin")
            response.headers.setdefault("X-Frame-Options", "DENY")
        return response
