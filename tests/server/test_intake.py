"""An upload's row: received (on disk, schema not checked) -> queued, each move timestamped; a refused upload
keeps no row and costs no quota; a row a stopped server left ``received`` is failed, not counted.
On SQLite (and PostgreSQL in ``make test``)."""

from __future__ import annotations

import io
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_api import pack  # noqa: E402
from test_storage import broken_decompressobj  # noqa: E402


@pytest.fixture
def setup(cfg, engine):  # type: ignore[no-untyped-def]
    from skybench.server.auth import add_team
    from skybench.server.db import sessions
    from skybench.server.storage import Store

    Session = sessions(engine)
    with Session() as s:
        team = add_team(s, "alpha").team
    return cfg, Session, Store(cfg.storage, cfg.upload), team


def _rows(Session):  # type: ignore[no-untyped-def]  # noqa: N803
    from skybench.server.db import Submission

    with Session() as s:
        return list(s.scalars(select(Submission)).all())


class _SeeRowWhileChecking:
    """Wraps Store.unpack to record the upload's row as it is while its archive is being checked."""

    def __init__(self, store, Session) -> None:  # type: ignore[no-untyped-def]  # noqa: N803
        self.unpack, self.Session, self.seen = store.unpack, Session, []
        store.unpack = self

    def __call__(self, archive):  # type: ignore[no-untyped-def]
        self.seen = [(r.state, r.sha256, r.counted, r.received_at, r.queued_at) for r in _rows(self.Session)]
        return self.unpack(archive)


def test_received_then_queued_each_move_timestamped(setup):
    from skybench.server import intake, queue
    from skybench.server.db import utcnow

    cfg, Session, store, team = setup
    seen = _SeeRowWhileChecking(store, Session)
    t0 = utcnow()
    sub = intake.accept(cfg, Session, store, team.id, "lens-space", "m1", io.BytesIO(pack("alpha", "m1")), t0)
    [(state, sha, counted, received_at, queued_at)] = seen.seen
    assert (state, sha, counted, queued_at) == ("received", None, False, None)  # on disk, not yet checked
    assert received_at == t0
    [row] = _rows(Session)
    assert row.id == sub.id and row.state == "queued" and row.counted and row.sha256 and len(row.sha256) == 64
    assert row.received_at == t0 <= row.queued_at and row.running_at is None
    with Session() as s:
        assert queue.quota_left(s, cfg, team, "lens-space") == {"today": 2, "phase": 4}


def test_received_row_is_not_claimable(setup):
    from skybench.server import queue

    cfg, Session, _, team = setup
    with Session() as s:
        sub = queue.receive(s, cfg, team, "lens-space", "m1")
        assert queue.claim(s, "w1", 30) is None
        assert s.get(queue.Submission, sub.id).state == "received"


@pytest.mark.parametrize("bad", ["schema", "quota"])
def test_refused_upload_keeps_no_row_and_no_quota(setup, bad):
    from skybench.server import intake, queue
    from skybench.server.db import utcnow
    from skybench.server.storage import UploadError

    cfg, Session, store, team = setup
    if bad == "quota":
        for i in range(3):  # per_day: 3
            intake.accept(cfg, Session, store, team.id, "lens-space", f"q{i}", io.BytesIO(pack("alpha", f"q{i}")),
                          utcnow())
    before = {r.id for r in _rows(Session)}
    with Session() as s:
        left = queue.quota_left(s, cfg, team, "lens-space")
    seen = _SeeRowWhileChecking(store, Session)
    data = pack("alpha", "m1", fmt="onnnx") if bad == "schema" else pack("alpha", "q3")
    with pytest.raises(UploadError if bad == "schema" else queue.Refused):
        intake.accept(cfg, Session, store, team.id, "lens-space", "m1" if bad == "schema" else "q3",
                      io.BytesIO(data), utcnow())
    if bad == "schema":
        assert "received" in [x[0] for x in seen.seen]  # the row existed while it was checked ...
    else:  # refused before it was unpacked or stored: a refused upload costs no disk either
        assert seen.seen == [] and len(list(store.objects.glob("*/*"))) == 3
    assert {r.id for r in _rows(Session)} == before  # ... and is gone
    with Session() as s:
        assert queue.quota_left(s, cfg, team, "lens-space") == left
    assert list(store.incoming.iterdir()) == []


def test_refused_upload_keeps_the_object_another_upload_of_it_is_queueing(setup, monkeypatch):
    """Two uploads of the same bytes at once: one refused at the queue while the other is between storing and
    queueing must not remove the stored folder that the other then queues."""
    import threading

    from skybench.server import intake, queue
    from skybench.server.db import utcnow

    cfg, Session, store, team = setup
    data, enqueue = pack("alpha", "m1"), queue.enqueue
    holding, go = threading.Event(), threading.Event()

    def paused_then_refused(*args, **kwargs):  # type: ignore[no-untyped-def]
        if threading.current_thread().name == "second":
            raise queue.Refused("lost a race for the quota", 429)
        holding.set()
        assert go.wait(30)
        return enqueue(*args, **kwargs)

    monkeypatch.setattr(queue, "enqueue", paused_then_refused)
    done: list[object] = []
    first = threading.Thread(name="first", target=lambda: done.append(
        intake.accept(cfg, Session, store, team.id, "lens-space", "m1", io.BytesIO(data), utcnow())))
    first.start()
    assert holding.wait(30)  # the first is stored, about to be queued

    def refused() -> None:
        with pytest.raises(queue.Refused):
            intake.accept(cfg, Session, store, team.id, "lens-space", "m1", io.BytesIO(data), utcnow())

    second = threading.Thread(name="second", target=refused)
    second.start()
    second.join(30)
    go.set()
    first.join(30)
    [row] = _rows(Session)
    assert row.state == "queued" and done and store.object_dir(row.sha256).is_dir(), "the queued entry's files"
    # and a refused upload alone still keeps no disk
    monkeypatch.setattr(queue, "enqueue", lambda *a, **k: (_ for _ in ()).throw(queue.Refused("no", 429)))
    with pytest.raises(queue.Refused):
        intake.accept(cfg, Session, store, team.id, "lens-space", "m2", io.BytesIO(pack("alpha", "m2")), utcnow())
    assert [d.name for d in store.objects.glob("*/*")] == [row.sha256]


def test_uploads_refused_after_unpacking_are_bounded_per_hour(setup):
    """Refused uploads cost no quota, but each was unpacked and hashed (up to ``max_unpacked_bytes``): past
    ``upload.max_refused_per_hour`` a team's uploads are refused before unpacking until the UTC hour ends."""
    from skybench.server import intake, queue
    from skybench.server.db import utcnow
    from skybench.server.storage import UploadError

    cfg, Session, store, team = setup
    cfg = cfg.model_copy(update={"upload": cfg.upload.model_copy(update={"max_refused_per_hour": 2})})
    t0 = utcnow().replace(minute=5)
    for i in range(2):  # a submission.yaml naming another team: unpacked, then refused
        with pytest.raises(UploadError, match="beta"):
            intake.accept(cfg, Session, store, team.id, "lens-space", f"m{i}", io.BytesIO(pack("beta", f"m{i}")), t0)
    seen = _SeeRowWhileChecking(store, Session)
    with pytest.raises(queue.Refused, match="refused this hour") as refused:  # even a good one, this hour
        intake.accept(cfg, Session, store, team.id, "lens-space", "ok", io.BytesIO(pack("alpha", "ok")), t0)
    assert refused.value.status == 429 and seen.seen == [] and list(store.incoming.iterdir()) == []
    with Session() as s:
        assert queue.quota_left(s, cfg, team, "lens-space", t0) == {"today": 3, "phase": 5}
    later = t0 + timedelta(hours=1)
    sub = intake.accept(cfg, Session, store, team.id, "lens-space", "ok", io.BytesIO(pack("alpha", "ok")), later)
    assert sub.state == "queued"


def test_other_compressors_and_unnamed_decoder_errors_are_counted_refusals(setup, monkeypatch):
    """tarfile's ``r:*`` unpacked .tar.xz and .tar.bz2 (a damaged xz stream raised LZMAError: a 500, not counted,
    so ``upload.max_refused_per_hour`` never answered). Each is a one-line 400 now, counted, and so is an error
    of a type no handler names (a future decoder's); past the hourly limit even a good upload is refused (429)."""
    import bz2
    import gzip
    import lzma
    import zlib

    from skybench.server import intake, queue
    from skybench.server.db import utcnow
    from skybench.server.storage import UploadError

    cfg, Session, store, team = setup
    cfg = cfg.model_copy(update={"upload": cfg.upload.model_copy(update={"max_refused_per_hour": 4})})
    t0 = utcnow().replace(minute=5)
    tar = gzip.decompress(pack("alpha", "m1"))
    damaged = bytearray(lzma.compress(tar))
    damaged[-60:-20] = bytes(b ^ 0xFF for b in damaged[-60:-20])

    for data, reason in ((lzma.compress(tar), "compressed with xz"), (bytes(damaged), "compressed with xz"),
                         (bz2.compress(tar), "compressed with bzip2"), (pack("alpha", "m1"), "NewDecoderError")):
        with monkeypatch.context() as m:
            if reason == "NewDecoderError":
                m.setattr(zlib, "decompressobj", broken_decompressobj("no handler names me"))
            with pytest.raises(UploadError, match=reason) as exc:
                intake.accept(cfg, Session, store, team.id, "lens-space", "m1", io.BytesIO(data), t0)
        assert exc.value.status == 400 and "\n" not in str(exc.value)
    with pytest.raises(queue.Refused, match="refused this hour") as refused:
        intake.accept(cfg, Session, store, team.id, "lens-space", "ok", io.BytesIO(pack("alpha", "ok")), t0)
    assert refused.value.status == 429 and _rows(Session) == [] and list(store.incoming.iterdir()) == []


def test_stale_received_rows_fail_uncounted(setup):
    from skybench.server import queue
    from skybench.server.db import Submission, utcnow

    cfg, Session, store, team = setup
    with Session() as s:
        old = queue.receive(s, cfg, team, "lens-space", "old", utcnow() - timedelta(hours=2)).id
        young = queue.receive(s, cfg, team, "lens-space", "young").id
        assert queue.expire_received(s) == 1
    with Session() as s:
        o, y = s.get(Submission, old), s.get(Submission, young)
        assert o.state == "failed" and not o.counted and o.failed_at is not None
        assert "not queued and costs no quota" in o.reason
        assert y.state == "received"
        # the stopped server's upload cannot be queued any more: the team is told to submit again
        with pytest.raises(queue.Refused, match="submit it again"):
            queue.enqueue(s, cfg, team, "lens-space", "old", "ab" * 32, sub_id=old)
        assert s.get(Submission, old, populate_existing=True).state == "failed"
        assert queue.quota_left(s, cfg, team, "lens-space") == {"today": 3, "phase": 5}


def test_api_and_pages_show_every_move(setup, engine):
    from fastapi.testclient import TestClient

    from skybench.server.app import create_app
    from skybench.server.auth import add_team

    cfg, Session, _, _ = setup
    app = create_app(cfg, engine)
    with Session() as s:
        token = add_team(s, "beta").token
    with TestClient(app) as client:
        r = client.post("/api/submissions", headers={"Authorization": f"Bearer {token}"},
                        data={"track": "lens-space", "name": "m1"},
                        files={"file": ("s.tar.gz", pack("beta", "m1"), "application/gzip")})
        assert r.status_code == 202, r.text
        body = r.json()
        assert body["state"] == "queued" and body["received_at"] <= body["queued_at"]
        assert body["running_at"] is None and body["finished_at"] is None and body["failed_at"] is None
        client.post("/login", data={"token": token, "csrf": _csrf(client)})
        page = client.get(f"/team/submissions/{body['id']}").text
        assert 'class="move-received"' in page and 'class="move-queued"' in page
        assert 'class="move-running"' not in page


def _csrf(client) -> str:  # type: ignore[no-untyped-def]
    import re

    m = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text)
    assert m is not None
    return m.group(1)
