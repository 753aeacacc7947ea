"""Team and admin tokens: ``sbt_<id>_<secret>``; only the argon2id hash of the secret is stored.

The public ``<id>`` finds the row, so a check costs one argon2 verification, not one per team. Failed checks
are counted per client and refused with 429 past ``auth.max_failures`` in ``auth.window_seconds`` (token
guessing); a refused client is answered before any hash is computed."""

from __future__ import annotations

import hashlib
import ipaddress
import re
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from skybench.harness.submission import SLUG, reserved_team
from skybench.server.db import Team

_HASHER = PasswordHasher()  # argon2id with the library's (RFC 9106 low-memory) defaults
_TOKEN = re.compile(r"^sbt_([A-Za-z0-9]{16})_([A-Za-z0-9_-]{43})$")


class AuthError(Exception):
    """A token is missing, or malformed or wrong (one message for both: nothing to learn from it)."""


class Busy(Exception):
    """Every argon2 slot of this server process stayed taken (:class:`FailureLimiter`'s ``max_hashing``)."""

    retry_after = 5

    def __init__(self) -> None:
        super().__init__(f"the server is busy checking other tokens; nothing was changed: retry in "
                         f"{self.retry_after} s")


class RateLimited(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed token checks from this client; retry in {retry_after} s")
        self.retry_after = retry_after


@dataclass(frozen=True)
class Issued:
    team: Team
    token: str  # shown once, never stored


def new_token() -> tuple[str, str, str]:
    """(token, id, argon2 hash of the secret)."""
    tid = "".join(secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789") for _ in range(16))
    secret = secrets.token_urlsafe(32)  # 256 bits
    return f"sbt_{tid}_{secret}", tid, _HASHER.hash(secret)


def add_team(session: Session, name: str, members: list[str] | None = None, *, admin: bool = False) -> Issued:
    """Create a team (or an admin account with ``admin``) and return it with its token; commits."""
    if not re.fullmatch(SLUG, name) or ".." in name:  # fullmatch: `$` alone lets "name\n" through
        raise ValueError(f"team name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or "
                         "digit (it becomes the folder submissions/<team>/)")
    if reserved_team(name):
        raise ValueError(f"team name {name!r} is reserved for the evaluation stage; choose another")
    def exists(same: Team) -> ValueError:
        return ValueError(f"team {same.name!r} exists already (names differing only in case are one team); "
                          f"`skybench admin team token {same.name}` issues a new token")

    if (same := session.scalar(select(Team).where(func.lower(Team.name) == name.lower()))) is not None:
        raise exists(same)
    token, tid, hashed = new_token()
    team = Team(name=name, members=[m.strip() for m in members or [] if m.strip()], token_id=tid,
                token_hash=hashed, is_admin=admin)
    session.add(team)
    try:
        session.commit()
    except IntegrityError:  # another request inserted the name (in some case) since the check: uq_teams_name_lower
        session.rollback()
        if (same := session.scalar(select(Team).where(func.lower(Team.name) == name.lower()))) is None:
            raise
        raise exists(same) from None
    return Issued(team, token)


def rotate_token(session: Session, name: str) -> str:
    """A new token for team ``name``; the old one stops working. Commits."""
    team = session.scalar(select(Team).where(Team.name == name))
    if team is None:
        raise ValueError(f"no team {name!r}")
    token, team.token_id, team.token_hash = new_token()
    session.commit()
    return token


def client_key(host: str | None) -> str:
    """What the log-in limiter counts failures by: an IPv4 address, or an IPv6 address's /64 network (one host
    commonly holds a whole /64, RFC 6177, so counting its single addresses would let it guess on without limit)."""
    try:
        ip = ipaddress.ip_address(host or "")
    except ValueError:
        return host or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ip.ipv4_mapped or ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class FailureLimiter:
    """Failed attempts per client in a sliding window (in this process's memory: per server process)."""

    def __init__(self, max_failures: int, window_seconds: float, max_clients: int = 100_000,
                 max_hashing: int = 4) -> None:
        self.max, self.window, self.max_clients = max_failures, window_seconds, max_clients
        self.hashing = threading.BoundedSemaphore(max_hashing)  # argon2 checks at once, whoever asks
        self._fails: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float]:
        q = self._fails.setdefault(client, deque())
        while q and q[0] <= now - self.window:
            q.popleft()
        return q

    def check(self, client: str) -> None:
        """Raise :class:`RateLimited` when ``client`` has used up its failures."""
        now = time.monotonic()
        with self._lock:
            q = self._recent(client, now)
            if len(q) >= self.max:
                raise RateLimited(max(1, int(q[0] + self.window - now) + 1))
            if not q:
                self._fails.pop(client, None)  # keep the table small

    def failed(self, client: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._forget(now)
            self._recent(client, now).append(now)

    def begin(self, client: str) -> float:
        """Count an attempt of ``client`` as failed before its token is hashed, or raise :class:`RateLimited`:
        attempts sent at once cannot all pass :meth:`check` before the first has failed (one argon2 hash per
        server thread instead of ``max_failures``). :meth:`passed` takes the count back for a right token."""
        now = time.monotonic()
        with self._lock:
            self._forget(now)
            q = self._recent(client, now)
            if len(q) >= self.max:
                raise RateLimited(max(1, int(q[0] + self.window - now) + 1))
            q.append(now)
        return now

    def passed(self, client: str, stamp: float) -> None:
        with self._lock:
            q = self._fails.get(client)
            if q is not None and stamp in q:
                q.remove(stamp)

    def _forget(self, now: float) -> None:
        if len(self._fails) >= self.max_clients:  # many addresses (IPv6): forget those whose window passed
            for c in [c for c, q in self._fails.items() if not q or q[-1] <= now - self.window]:
                del self._fails[c]


class VerifiedCache:
    """Tokens verified in the last ``ttl`` seconds, by their sha256, so a status poll costs no argon2 run.

    A hit still reads the team's row and must find the same stored hash: a rotated token stops at once."""

    def __init__(self, ttl: float = 60.0, size: int = 10_000) -> None:
        self.ttl, self.size = ttl, size
        self._seen: dict[bytes, tuple[int, str, float]] = {}
        self._flights: dict[bytes, threading.Lock] = {}
        self._lock = threading.Lock()

    def flight(self, token: str) -> threading.Lock:
        """One lock per token: a burst of first requests with one token waits for a single argon2 check (each
        costs ~0.8 s and 64 MiB) instead of running one each."""
        key = hashlib.sha256(token.encode()).digest()
        with self._lock:
            if len(self._flights) >= self.size:
                self._flights.clear()
            return self._flights.setdefault(key, threading.Lock())

    def get(self, session: Session, token: str) -> Team | None:
        key = hashlib.sha256(token.encode()).digest()
        with self._lock:
            hit = self._seen.get(key)
        if hit is None or hit[2] < time.monotonic():
            return None
        team = session.get(Team, hit[0])
        return team if team is not None and team.token_hash == hit[1] else None

    def put(self, token: str, team: Team) -> None:
        with self._lock:
            if len(self._seen) >= self.size:
                self._seen.clear()
            self._seen[hashlib.sha256(token.encode()).digest()] = (team.id, team.token_hash,
                                                                   time.monotonic() + self.ttl)


def verify(session: Session, token: str | None, client: str, limiter: FailureLimiter,
           cache: VerifiedCache | None = None) -> Team:
    """The team whose token this is; raises :class:`RateLimited` or :class:`AuthError`."""
    limiter.check(client)
    if token and cache is not None:
        with cache.flight(token):
            if (team := cache.get(session, token)) is not None:
                return team
            return _check(session, token, client, limiter, cache)
    return _check(session, token, client, limiter, cache)


def _check(session: Session, token: str | None, client: str, limiter: FailureLimiter,
           cache: VerifiedCache | None) -> Team:
    if not token:  # no guess made: not counted (a browser's first request carries none)
        raise AuthError("missing token (send 'Authorization: Bearer <your team token>')")
    stamp = limiter.begin(client)  # counted before the hash: a burst of guesses at once runs max_failures hashes
    m = _TOKEN.match(token)
    try:
        team = session.scalar(select(Team).where(Team.token_id == m.group(1))) if m else None
    except BaseException:  # the database away: no guess was checked
        limiter.passed(client, stamp)
        raise
    session.close()  # its database connection goes back to the pool during the hash (``team`` stays loaded)
    if team is None or m is None:  # malformed, or no such token id: refused unhashed (the attempt stays counted).
        # Hashing these, to look as slow as a wrong secret, let junk tokens from many addresses hold every
        # argon2 slot; the id's existence tells nothing of a 256-bit secret.
        raise AuthError("invalid or missing token (send 'Authorization: Bearer <your team token>')")
    if not limiter.hashing.acquire(timeout=2.0):  # no guess was checked
        limiter.passed(client, stamp)
        raise Busy()
    try:
        ok: bool = _HASHER.verify(team.token_hash, m.group(2))
    except (VerificationError, InvalidHashError):
        ok = False
    finally:
        limiter.hashing.release()
    if not ok:  # the attempt stays counted
        raise AuthError("invalid or missing token (send 'Authorization: Bearer <your team token>')")
    limiter.passed(client, stamp)
    if cache is not None:
        cache.put(token, team)
    return team
