"""The challenge server's FastAPI application (``skybench serve``): a JSON API under ``/api/``.

    POST /api/submissions        multipart: file (.tar.gz/.zip of the submission folder), track, name -> 202
    GET  /api/submissions        the team's submissions
    GET  /api/submissions/{id}   one of them (404 for another team's id: existence is not revealed)
    GET  /api/me                 the team, its quotas left and each track's phase

Every call needs ``Authorization: Bearer <team token>``. An upload is refused before its body is read when
the token is wrong, and cut off past ``upload.max_bytes``; a schema error is answered at once (422) and costs
no quota."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.datastructures import UploadFile

from skybench.harness.submission import SLUG
from skybench.server import faults, intake, queue
from skybench.server.auth import AuthError, Busy, FailureLimiter, RateLimited, VerifiedCache, client_key, verify
from skybench.server.config import ChallengeConfig, Phase, shown_as_open
from skybench.server.db import STATES, Submission, Team, check_clock, make_engine, sessions, upgrade, utcnow
from skybench.server.storage import Store, UploadError, read_upload_form

log = logging.getLogger("skybench.server")


@functools.lru_cache(maxsize=64)
def _track_in(track: str, closed: bool) -> Any:
    """The track as the participant view sees it in a phase (``closed``: private metrics shown too), loaded once
    per process (load_track takes ~50 ms: a poll must not)."""
    from skybench.tracks import load_track

    t = load_track(track)
    ev = t.evaluation.model_copy(update={"phase": "closed" if closed else "open"})
    return t.model_copy(update={"evaluation": ev})


def shown_metrics(cfg: ChallengeConfig, sub: Submission, phase: Phase, session: Session,
                  memo: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a team sees of a finished submission's metrics now: the participant view (:func:`skybench.harness.
    visibility.participant_view`: the public part until the final phase, then the private part too, never a
    whole-test-set metric of a split track, no stratum bin with few objects); while the phase is open, rounded,
    or only the Ladder's score with ``open_board: ladder`` (:func:`skybench.server.ladder.shown`). ``memo``: one
    request's, so a list of a team's submissions climbs each track's ladder once, not once per submission."""
    from skybench.harness.visibility import SHOWN_DECIMALS, participant_view

    if sub.track not in cfg.tracks:  # removed from challenge.yaml: no Ladder, no phase of its own
        return {}
    if shown_as_open(phase) and cfg.open_board == "ladder":
        from skybench.server import ladder

        return ladder.shown(session, cfg, sub, memo)
    decimals = cfg.open_digits if shown_as_open(phase) else SHOWN_DECIMALS
    return participant_view(_track_in(sub.track, phase == "final"), sub.metrics or {}, decimals)


async def _tick(cfg: ChallengeConfig, Session: sessionmaker) -> None:  # noqa: N803 - a sessionmaker
    from skybench.server import phases

    def once() -> None:
        with Session() as s:
            queue.expire_received(s)  # left by an upload whose database went away, or by a stopped server
            now = phases.catch_up_all(s, cfg)
            if cfg.open_board == "ladder":  # the ladder's new steps are computed here, not in a team's request
                from skybench.server import ladder

                for track in (t for t, phase in now.items() if phase == "open"):
                    try:  # one track's failure does not hold the others' Ladder
                        ladder.climb(s, cfg, track)
                    except Exception:  # noqa: BLE001 - logged, tried again at the next tick
                        s.rollback()
                        log.exception("the Ladder of %s failed; trying again in %.0f s", track, cfg.tick_seconds)

    while True:
        try:
            await run_in_threadpool(once)
        except Exception:  # noqa: BLE001 - the database or MLflow away: try again at the next tick
            log.exception("phase tick failed; trying again in %.0f s", cfg.tick_seconds)
        await asyncio.sleep(cfg.tick_seconds)


@contextlib.asynccontextmanager
async def _ticking(cfg: ChallengeConfig, Session: sessionmaker, app: FastAPI) -> AsyncIterator[None]:  # noqa: N803
    """The app's lifespan: every ``tick_seconds``, snapshot the phases that ended by date (and climb the Ladder)."""
    task = asyncio.create_task(_tick(cfg, Session))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


SMALL_BODY = 64 * 1024  # the most any request but an upload may send: a log-in form, a final pick, an admin call
UPLOAD_ROUTES = frozenset({("POST", "/api/submissions"), ("POST", "/submit")})  # capped at upload.max_bytes


class BodyCap:
    """Answer 413 to a request whose body is over ``limit`` bytes, before the app sees any of it, except on
    ``exempt`` (method, path) routes, which stream their own bodies under their own cap. FastAPI reads and parses
    (on the event loop) a JSON or form body before it resolves the route's token check: without this, one
    anonymous request of a few hundred MB held GBs of memory and stalled every other request while parsed."""

    def __init__(self, app: Any, limit: int = SMALL_BODY, exempt: frozenset[tuple[str, str]] = UPLOAD_ROUTES):
        self.app, self.limit, self.exempt = app, limit, exempt

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"]) in self.exempt:
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.limit:
            return await self._refuse(scope, receive, send)
        held, size, more = [], 0, True  # at most ``limit`` bytes, read here, then given to the app as sent
        while more:
            message = await receive()
            held.append(message)
            if message["type"] != "http.request":  # the client went away
                break
            size += len(message.get("body", b""))
            if size > self.limit:  # chunked, or more than its Content-Length said
                return await self._refuse(scope, receive, send)
            more = message.get("more_body", False)

        async def replay() -> Any:
            return held.pop(0) if held else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Any, receive: Any, send: Any) -> None:
        response = JSONResponse({"detail": f"request body over {self.limit // 1024} KiB; only an upload "
                                           "(POST /api/submissions, the /submit form) may be larger"},
                                status_code=413, headers={"Connection": "close"})
        await response(scope, receive, send)


def create_app(cfg: ChallengeConfig, engine: Engine | None = None) -> FastAPI:
    engine = engine or make_engine(cfg.db_url)
    check_clock(engine, cfg.max_clock_skew_seconds)
    upgrade(engine)
    Session = sessions(engine)
    store = Store(cfg.storage, cfg.upload)
    with Session() as s:
        queue.expire_received(s)  # uploads a stopped server was checking: never acknowledged, not counted
        store.sweep_objects(lambda sha: queue.stored_for(s, sha))  # stored, then the database went away
        for track, n in queue.waiting_elsewhere(s, cfg).items():
            log.warning("%d submissions wait on track %r, which challenge.yaml no longer names: no worker takes "
                        "them until it is back", n, track)
    limiter = FailureLimiter(cfg.auth.max_failures, cfg.auth.window_seconds, max_hashing=cfg.auth.max_hashing)
    verified = VerifiedCache()
    app = FastAPI(title="skybench challenge server", docs_url=None, openapi_url="/api/openapi.json",
                  redoc_url=None, lifespan=functools.partial(_ticking, cfg, Session))
    app.state.cfg, app.state.engine, app.state.sessions, app.state.store = cfg, engine, Session, store
    app.state.limiter, app.state.verified = limiter, verified
    app.state.board_reads = FailureLimiter(cfg.max_board_reads_per_minute, 60.0)  # a count per client and minute
    app.state.uploads = uploads = intake.UploadSlots(cfg.upload.max_in_flight)
    faults.install(app)  # 503 while the database is away, 507 when the store is full

    def team(request: Request) -> Team:
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else None
        client = client_key(request.client.host if request.client else None)
        with Session() as s:
            try:
                return verify(s, token, client, limiter, verified)
            except (RateLimited, Busy) as exc:
                raise HTTPException(429 if isinstance(exc, RateLimited) else 503, str(exc),
                                    headers={"Retry-After": str(exc.retry_after)}) from None
            except AuthError as exc:
                raise HTTPException(401, str(exc), headers={"WWW-Authenticate": "Bearer"}) from None

    def board_read(request: Request) -> None:
        """Count a board read of the request's client; 429 past ``max_board_reads_per_minute``."""
        try:
            app.state.board_reads.begin(client_key(request.client.host if request.client else None))
        except RateLimited as exc:
            raise HTTPException(429, f"more than {cfg.max_board_reads_per_minute} leaderboard reads a minute from "
                                     "this address; wait", headers={"Retry-After": str(exc.retry_after)}) from None

    app.state.board_read = board_read

    def view(sub: Submission, team_name: str, memo: dict[str, Any] | None = None) -> dict[str, Any]:
        memo = {} if memo is None else memo  # one request's phases and ladders
        with Session() as s:
            if (phase := memo.get(f"phase:{sub.track}")) is None:
                phase = memo[f"phase:{sub.track}"] = queue.current_phase(s, cfg, sub.track)
            metrics = shown_metrics(cfg, sub, phase, s, memo) if sub.state == "finished" else {}
        return {"id": sub.id, "team": team_name, "track": sub.track, "name": sub.name, "sha256": sub.sha256,
                "phase": sub.phase, "state": sub.state, "reason": sub.reason, "log": sub.log or "",
                "attempt": sub.attempt,
                "counted": sub.counted,
                "metrics": metrics,
                **{f"{k}_at": (getattr(sub, f"{k}_at").isoformat() if getattr(sub, f"{k}_at") else None)
                   for k in STATES},
                "status_url": f"/api/submissions/{sub.id}"}

    @app.get("/api/me")
    def me(t: Team = Depends(team)) -> dict[str, Any]:
        with Session() as s:
            tracks = {name: {"phase": queue.current_phase(s, cfg, name),
                             "quota_left": queue.quota_left(s, cfg, t, name)}
                      for name, tc in cfg.tracks.items() if tc.open}
        return {"team": t.name, "members": t.members, "admin": t.is_admin, "tracks": tracks}

    @app.get("/api/submissions")
    def mine(t: Team = Depends(team)) -> list[dict[str, Any]]:
        with Session() as s:
            subs = s.scalars(select(Submission).where(Submission.team_id == t.id)
                             .order_by(Submission.received_at.desc())).all()
        memo: dict[str, Any] = {}
        return [view(x, t.name, memo) for x in subs]

    @app.get("/api/submissions/{sub_id}")
    def one(sub_id: str, t: Team = Depends(team)) -> dict[str, Any]:
        with Session() as s:
            sub = s.get(Submission, sub_id)
        if sub is None or sub.team_id != t.id:  # another team's id looks exactly like a missing one
            raise HTTPException(404, f"no submission {sub_id!r} of team {t.name!r}")
        return view(sub, t.name)

    @app.post("/api/submissions", status_code=202)
    async def submit(request: Request, t: Team = Depends(team)) -> dict[str, Any]:
        form = None
        try:
            with uploads.hold(t.id):
                form = await read_upload_form(request, cfg.upload.max_bytes)
                received = utcnow()  # the last byte is in: a slow upload cannot keep the time it began (quota day)
                sub = await _accept(form, t, received)
        except UploadError as exc:
            raise HTTPException(exc.status, str(exc)) from None
        except queue.Refused as exc:
            raise HTTPException(exc.status, str(exc)) from None
        finally:
            if form is not None:
                await form.close()
        return view(sub, t.name)

    async def _accept(form: Any, t: Team, received: Any) -> Submission:
        track, name, upload = form.get("track"), form.get("name"), form.get("file")
        for key, value in (("track", track), ("name", name)):
            if not isinstance(value, str) or not re.fullmatch(SLUG, value) or ".." in value:
                raise UploadError(f"form field {key!r}: 1-64 letters, digits, '.', '_' or '-' required", 422)
        if not isinstance(upload, UploadFile):
            raise UploadError("form field 'file': the packed submission folder (.tar.gz or .zip) is required",
                              422)
        assert isinstance(track, str) and isinstance(name, str)
        if track not in cfg.tracks or not cfg.tracks[track].open:
            raise UploadError(f"track {track!r} takes no submissions here (this challenge's tracks: "  # any phase
                              f"{', '.join(n for n, c in cfg.tracks.items() if c.open)})", 404)
        return await run_in_threadpool(intake.accept, cfg, Session, store, t.id, track, name, upload.file,
                                       received)

    from skybench.server import admin, phases

    app.include_router(phases.router(cfg, Session, team, board_read))
    app.include_router(admin.router(cfg, Session, team))
    from skybench.server.web import install

    install(app)  # the HTML pages (/, /tracks/..., /login, /team, /submit)
    app.add_middleware(BodyCap)
    return app


def serve(cfg: ChallengeConfig, host: str = "127.0.0.1", port: int = 8000) -> None:
    import uvicorn

    uvicorn.run(create_app(cfg), host=host, port=port, proxy_headers=True,
                timeout_graceful_shutdown=cfg.shutdown_grace_seconds)
