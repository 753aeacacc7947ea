"""What a team sees when the machine, not its submission, fails: the database away (503) or the store full (507).

Registered on the app by :func:`install`; every other error keeps FastAPI's own handling."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError

RETRY_AFTER = 30


def install(app: FastAPI) -> None:
    @app.exception_handler(DBAPIError)
    async def database_failed(request: Request, exc: Exception) -> JSONResponse:
        text = str(getattr(exc, "orig", exc)).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "disk is full" in text or "No space left" in text:  # SQLite in a full store
            return JSONResponse({"detail": "the server's submission store is full (its database cannot be "
                                           "written); nothing was stored and no quota used; try again later and "
                                           "tell the organisers"}, status_code=507)
        if isinstance(exc, OperationalError) or exc.connection_invalidated:  # type: ignore[attr-defined]
            return JSONResponse({"detail": "the challenge database is unreachable right now; this request changed "
                                           f"nothing; try again in a minute (Retry-After: {RETRY_AFTER} s)"},
                                status_code=503, headers={"Retry-After": str(RETRY_AFTER)})
        raise exc  # a bug, not an outage: FastAPI's 500
