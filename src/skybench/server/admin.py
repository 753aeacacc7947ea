"""The organisers' API (an admin token: ``skybench admin team add NAME --admin``).

    POST /api/admin/teams                  {"name", "members", "admin"} -> the new token (shown once)
    GET  /api/admin/teams                  every team, its members and submission count
    POST /api/admin/tracks/{track}/phase   {"phase"}: move a track (the ending phase's leaderboard is kept)

A team token gets 404 here, as for a path that does not exist."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from skybench.server import phases
from skybench.server.config import ChallengeConfig, Phase
from skybench.server.db import Submission, Team


class NewTeam(BaseModel):
    name: str = Field(..., min_length=1, max_length=64)
    members: list[str] = Field(default_factory=list)
    admin: bool = False


class NewPhase(BaseModel):
    phase: Phase


def router(cfg: ChallengeConfig, Session: sessionmaker, team: Callable[..., Team]) -> APIRouter:  # noqa: N803
    def admin(t: Team = Depends(team)) -> Team:
        if not t.is_admin:
            raise HTTPException(404, "Not Found")
        return t

    api = APIRouter(prefix="/api/admin", tags=["admin"])

    @api.post("/teams", status_code=201)
    def add(body: NewTeam, a: Team = Depends(admin)) -> dict[str, Any]:
        from skybench.server.auth import add_team

        with Session() as s:
            try:
                issued = add_team(s, body.name, body.members, admin=body.admin)
            except ValueError as exc:
                raise HTTPException(409 if "exists already" in str(exc) else 422, str(exc)) from None
        return {"team": body.name, "members": body.members, "admin": body.admin, "token": issued.token}

    @api.get("/teams")
    def teams(a: Team = Depends(admin)) -> list[dict[str, Any]]:
        with Session() as s:
            counts = dict(s.execute(select(Submission.team_id, func.count()).group_by(Submission.team_id)).all())
            rows = s.scalars(select(Team).order_by(Team.name)).all()
            return [{"team": t.name, "members": t.members, "admin": t.is_admin,
                     "created_at": t.created_at.isoformat(), "submissions": counts.get(t.id, 0)} for t in rows]

    @api.post("/tracks/{track}/phase")
    def phase(track: str, body: NewPhase, a: Team = Depends(admin)) -> dict[str, Any]:
        if track not in cfg.tracks:
            raise HTTPException(404, f"no track {track!r} in this challenge (tracks: {', '.join(cfg.tracks)})")
        with Session() as s:
            old = phases.change_phase(s, cfg, track, body.phase, by=f"api:{a.name}")
        return {"track": track, "phase": body.phase, "was": old}

    return api
