"""One upload's way into the queue, shared by the JSON API and the web form:

    on disk (``Store.receive_file``) -> row ``received`` -> unpacked -> schema-checked and stored -> ``queued``

Run whole in one worker thread, which cleans up after itself: a request cancelled meanwhile (the client went
away, the server is shutting down) cannot leave a file in ``incoming/`` or a ``received`` row behind, since
the thread, not the cancelled coroutine, removes them. A refused upload (:class:`UploadError`,
:class:`queue.Refused`) keeps no row and costs no quota; one refused after unpacking counts towards the team's
``upload.max_refused_per_hour``."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from sqlalchemy.orm import sessionmaker

from skybench.harness import submission
from skybench.server import queue
from skybench.server.config import ChallengeConfig
from skybench.server.db import Submission, Team
from skybench.server.storage import Store, UploadError

log = logging.getLogger("skybench.server")


def accept(cfg: ChallengeConfig, sessions: sessionmaker, store: Store, team_id: int, track: str, name: str,
           src: BinaryIO, received: datetime) -> Submission:
    """Receive ``src`` (the uploaded archive) as ``team_id``'s entry ``name`` on ``track`` and queue it.

    Raises :class:`UploadError` or :class:`queue.Refused` (nothing kept) with the team's message."""
    archive: Path | None = None
    folder: Path | None = None
    sub_id: str | None = None
    queued = False
    try:
        archive = store.receive_file(src)
        with sessions() as s:
            team = s.get(Team, team_id)
            assert team is not None
            sub_id = queue.receive(s, cfg, team, track, name, received).id
        folder = store.unpack(archive)
        loaded: submission.Submission | None = None
        try:  # moved into the store when valid (only its staging folder is left to remove), held until queued
            with store.stored(folder, {"team": team.name, "name": name, "track": track}) as (loaded, _), \
                    sessions() as s:
                sub = queue.enqueue(s, cfg, team, track, name, loaded.sha256, received, sub_id=sub_id)
        except Exception:  # a quota or name race lost after the early check, or the database away: no disk kept
            if loaded is not None:
                _drop_unused(sessions, store, loaded.sha256)
            raise
        queued = True
        return sub
    except UploadError as exc:
        if sub_id is not None and exc.status < 500:  # the team's upload refused after unpacking (not a full store)
            with sessions() as s:
                queue.count_refused(s, team_id, received)
        raise
    finally:
        for leftover in (archive, folder):
            if leftover is not None:
                store.discard(leftover)
        if sub_id is not None and not queued:
            try:
                with sessions() as s:
                    queue.abandon(s, sub_id)
            except Exception:  # noqa: BLE001 - the database away: the row is failed by the tick's expire_received
                log.warning("could not remove the received row %s; it expires later", sub_id)


def _drop_unused(sessions: sessionmaker, store: Store, sha256: str) -> None:
    """Remove the stored folder ``sha256`` unless a queued submission uses it or another upload holds it; with the
    database away, leave it to the start-up sweep of unreferenced objects (:meth:`Store.sweep_objects`)."""
    try:
        with sessions() as s:
            store.drop_unused(sha256, lambda sha: queue.stored_for(s, sha))
    except Exception:  # noqa: BLE001 - what failed the upload may fail this too
        log.warning("could not check whether stored object %s is used; the next start-up sweeps it", sha256)


class UploadSlots:
    """One team's uploads in progress in this server process, at most ``limit``: one more is refused (429) before
    its body is read, so no team, whatever its quota, holds many bodies (disk, bandwidth, a worker thread each) in
    flight; the quota itself is checked once the body is in."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._held: Counter[int] = Counter()

    @contextlib.contextmanager
    def hold(self, team_id: int) -> Iterator[None]:
        with self._lock:
            if self._held[team_id] >= self.limit:
                raise UploadError(f"{self.limit} uploads of this team are already in progress: wait for one to end",
                                  429)
            self._held[team_id] += 1
        try:
            yield
        finally:
            with self._lock:
                self._held[team_id] -= 1
