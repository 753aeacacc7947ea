"""The JSON API (FastAPI TestClient) on SQLite and PostgreSQL: tokens, uploads, isolation between teams."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "submissions" / "examples" / "lens-space" / "onnx"


def pack(team: str, name: str, track: str = "lens-space", fmt: str = "onnx", pad: int = 0, more_yaml: str = "",
         model: bytes | None = None) -> bytes:
    """The example ONNX submission as ``team``'s entry ``name``, packed as ``skybench submit`` packs it; ``pad``:
    an extra file of that many zero bytes; ``more_yaml``: lines added to its submission.yaml; ``model``: other
    bytes for model.onnx."""
    from skybench.server.cli import pack as pack_folder

    with tempfile.TemporaryDirectory(prefix="skybench-pack-") as tmp:
        folder = Path(tmp) / name
        folder.mkdir()
        (folder / "submission.yaml").write_text(
            f"team: {team}\nname: {name}\ntrack: {track}\nformat: {fmt}\nmodel: model.onnx\n{more_yaml}")
        if model is None:
            shutil.copyfile(EXAMPLE / "model.onnx", folder / "model.onnx")
        else:
            (folder / "model.onnx").write_bytes(model)
        if pad:
            (folder / "weights.bin").write_bytes(bytes(pad))
        return pack_folder(folder)


@pytest.fixture
def server(cfg, engine):  # type: ignore[no-untyped-def]
    from skybench.server.app import create_app
    from skybench.server.auth import add_team
    from skybench.server.db import sessions

    app = create_app(cfg, engine)
    with sessions(engine)() as s:
        tokens = {n: add_team(s, n).token for n in ("alpha", "beta")}
    with TestClient(app) as client:
        yield client, tokens, app


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _upload(client, token, data: bytes, track="lens-space", name="m1"):  # type: ignore[no-untyped-def]
    return client.post("/api/submissions", headers=_auth(token), data={"track": track, "name": name},
                       files={"file": ("sub.tar.gz", data, "application/gzip")})


def test_upload_then_status_and_another_team_gets_404(server):
    client, tokens, _ = server
    r = _upload(client, tokens["alpha"], pack("alpha", "m1"))
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["state"] == "queued" and body["status_url"] == f"/api/submissions/{body['id']}"
    assert body["received_at"] and body["queued_at"] and body["counted"]
    mine = client.get(body["status_url"], headers=_auth(tokens["alpha"]))
    assert mine.status_code == 200 and mine.json()["name"] == "m1"
    theirs = client.get(body["status_url"], headers=_auth(tokens["beta"]))
    missing = client.get("/api/submissions/" + "0" * 32, headers=_auth(tokens["beta"]))
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["detail"].replace(body["id"], "X") == missing.json()["detail"].replace("0" * 32, "X")
    assert client.get("/api/submissions", headers=_auth(tokens["beta"])).json() == []
    assert [s["id"] for s in client.get("/api/submissions", headers=_auth(tokens["alpha"])).json()] == [body["id"]]
    me = client.get("/api/me", headers=_auth(tokens["alpha"])).json()
    assert me["team"] == "alpha" and me["tracks"]["lens-space"] == {"phase": "open",
                                                                     "quota_left": {"today": 2, "phase": 4}}


@pytest.mark.parametrize("path", ["/api/me", "/api/submissions", "/api/submissions/abc"])
def test_no_valid_token_no_data(server, path):
    client, tokens, _ = server
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": tokens["alpha"]},
                    {"Authorization": f"Basic {tokens['alpha']}"}):
        r = client.get(path, headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", (headers, r.text)


def test_upload_without_token_is_refused(server):
    client, tokens, _ = server
    r = client.post("/api/submissions", data={"track": "lens-space", "name": "m1"},
                    files={"file": ("s.tar.gz", pack("alpha", "m1"), "application/gzip")})
    assert r.status_code == 401


def test_token_guessing_gets_429(server):
    client, tokens, _ = server
    for _ in range(3):  # auth.max_failures in the test config
        assert client.get("/api/me", headers=_auth("sbt_AAAAAAAAAAAAAAAA_" + "A" * 43)).status_code == 401
    r = client.get("/api/me", headers=_auth(tokens["alpha"]))
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1


def test_a_large_body_is_refused_before_anything_reads_it(server):
    """Routes with a JSON body (a final pick, the admin API) had it read and parsed on the event loop before the
    token check, with no cap: 40 MiB without a token held 1.3 GB and stalled every request meanwhile. Every body
    but an upload's is capped (app.BodyCap), declared or streamed (chunked), with or without a token."""
    from skybench.server.app import SMALL_BODY

    client, tokens, _ = server
    big = b'{"submissions": [' + b"{}," * (SMALL_BODY // 3) + b"{}]}"
    for path in ("/api/tracks/lens-space/final", "/api/admin/teams", "/api/admin/tracks/lens-space/phase"):
        for headers in ({}, _auth(tokens["alpha"])):
            r = client.post(path, content=big, headers={"Content-Type": "application/json", **headers})
            assert r.status_code == 413 and "64 KiB" in r.json()["detail"], (path, r.status_code, r.text)
            chunks = (big[i:i + 8192] for i in range(0, len(big), 8192))  # no Content-Length: counted as it comes
            r = client.post(path, content=chunks, headers={"Content-Type": "application/json", **headers})
            assert r.status_code == 413, (path, r.status_code)
    # under the cap the route answers as before: the token is checked, then the body
    assert client.post("/api/tracks/lens-space/final", json={"submissions": []}).status_code == 401
    r = client.post("/api/tracks/lens-space/final", json={"submissions": []}, headers=_auth(tokens["alpha"]))
    assert r.status_code not in (401, 413), r.text
    # an upload keeps its own, larger cap (upload.max_bytes, 2 MB here): 200 kB of incompressible model is read
    data = pack("alpha", "big", model=os.urandom(200_000))
    assert len(data) > 2 * SMALL_BODY
    r = _upload(client, tokens["alpha"], data, name="big")
    assert r.status_code != 413 and "KiB" not in r.text, r.text


def test_schema_errors_cost_no_quota(server):
    client, tokens, _ = server
    bad = [pack("alpha", "m1", fmt="onnnx"),  # an invalid format
           pack("beta", "m1"),  # the yaml names another team
           pack("alpha", "other")]  # the yaml names another entry
    for data in bad:
        r = _upload(client, tokens["alpha"], data)
        assert r.status_code == 422, r.text
    assert "key 'format'" in _upload(client, tokens["alpha"], bad[0]).json()["detail"]
    assert "key 'team' is 'beta'" in _upload(client, tokens["alpha"], bad[1]).json()["detail"]
    me = client.get("/api/me", headers=_auth(tokens["alpha"])).json()
    assert me["tracks"]["lens-space"]["quota_left"] == {"today": 3, "phase": 5}
    assert client.get("/api/submissions", headers=_auth(tokens["alpha"])).json() == []
    store = server[2].state.store
    assert list(store.objects.iterdir()) == [] and list(store.incoming.iterdir()) == [], "nothing kept"


def test_quota_and_closed_track_over_the_api(server):
    client, tokens, _ = server
    for i in range(3):
        assert _upload(client, tokens["alpha"], pack("alpha", f"q{i}"), name=f"q{i}").status_code == 202
    r = _upload(client, tokens["alpha"], pack("alpha", "q3"), name="q3")
    assert r.status_code == 429 and "daily quota of 3" in r.json()["detail"]
    r = _upload(client, tokens["alpha"], pack("alpha", "g", track="lens-ground"), track="lens-ground", name="g")
    assert r.status_code == 404 and "takes no submissions" in r.json()["detail"]


def test_oversized_upload_is_cut_off(server):
    client, tokens, app = server
    store = app.state.store
    big = bytes(3_000_000)  # upload.max_bytes is 2,000,000
    r = _upload(client, tokens["alpha"], big)
    assert r.status_code == 413 and "larger than the limit of 2000000 bytes" in r.json()["detail"]

    def chunked():  # no Content-Length: cut off while streaming
        boundary = b"b0undary"
        yield b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="s.tgz"\r\n\r\n'
        for _ in range(50):
            yield bytes(256 * 1024)
        yield b"\r\n--" + boundary + b"--\r\n"

    r = client.post("/api/submissions", headers={**_auth(tokens["alpha"]),
                                                 "Content-Type": "multipart/form-data; boundary=b0undary"},
                    content=chunked())
    assert r.status_code == 413, r.text
    assert list(store.incoming.iterdir()) == [] and list(store.objects.iterdir()) == []


def test_archive_attack_over_the_api_leaves_nothing(server, tmp_path):
    client, tokens, app = server
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("x/../../../escaped")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    r = _upload(client, tokens["alpha"], buf.getvalue())
    assert r.status_code == 400 and "'..' is not allowed" in r.json()["detail"]
    assert list(app.state.store.incoming.iterdir()) == []
    assert not any(p.name == "escaped" for p in tmp_path.rglob("*"))


def test_a_damaged_tar_xz_is_a_one_line_400_not_a_500(server):
    """tarfile's ``r:*`` inflated .tar.xz: a stream corrupt after its first block raised LZMAError, a 500."""
    import gzip
    import lzma

    client, tokens, app = server
    data = bytearray(lzma.compress(gzip.decompress(pack("alpha", "m1", pad=200_000))))
    data[-60:-20] = bytes(b ^ 0xFF for b in data[-60:-20])
    r = _upload(client, tokens["alpha"], bytes(data))
    assert r.status_code == 400, r.text
    assert "compressed with xz; only a .tar.gz, .tar or .zip" in r.json()["detail"] and "\n" not in r.json()["detail"]
    assert list(app.state.store.incoming.iterdir()) == [] and list(app.state.store.objects.iterdir()) == []


def test_a_team_never_sees_its_metrics_of_a_stratum_bin_with_few_objects(server):
    """The API and the team's pages show a team's own metrics through the participant view: a per-stratum value of
    a bin with fewer than MIN_STRATUM_OBJECTS objects (one lens: whether it scored above the cut; one galaxy: its
    median dz, i.e. its z_spec) is left out, as in the participant record and MLflow, and so is a bin that would
    give it by difference (the part's count and value less the bins shown)."""
    from skybench.common import stratum_key
    from skybench.harness.visibility import MIN_STRATUM_OBJECTS
    from skybench.server.db import Submission, Team, sessions, utcnow

    client, tokens, app = server
    small, big, other = (stratum_key("lens_theta_E", label, "") for label in ("0.4-0.8", "0.8-1.2", "1.2-1.6"))
    metrics = {"public_auroc": 0.9, "private_auroc": 0.8, "public_n_lens": 71, "public_n_nonlens": 100,
               "public_tpr0": 0.5,
               f"public_{small}n_lens": 1, f"public_{small}n_nonlens": 0, f"public_{small}tpr0": 1.0,
               f"public_{big}n_lens": 40, f"public_{big}n_nonlens": MIN_STRATUM_OBJECTS, f"public_{big}tpr0": 0.5,
               f"public_{other}n_lens": 30, f"public_{other}n_nonlens": 0, f"public_{other}tpr0": 0.5}
    with sessions(app.state.engine)() as s:
        team = s.query(Team).filter_by(name="alpha").one()
        now = utcnow()
        s.add(Submission(id="f" * 32, team_id=team.id, track="lens-space", name="m1", sha256="0" * 64,
                         phase="open", state="finished", received_at=now, queued_at=now, finished_at=now,
                         metrics=metrics))
        s.commit()
    shown = client.get(f"/api/submissions/{'f' * 32}", headers=_auth(tokens["alpha"])).json()["metrics"]
    assert f"public_{big}tpr0" in shown and "private_auroc" not in shown
    assert not [k for k in shown if k.startswith(f"public_{small}")], shown
    # nor by difference: the part's 71 lenses less the two big bins' 70 would be the lone lens (its hit)
    assert not [k for k in shown if k.startswith(f"public_{other}")], shown


def test_a_metric_that_is_nan_or_infinite_is_stored_and_shown_as_null(server):
    """NaN metrics are ordinary (an interval of an empty part, a real-set metric without real lenses) and a
    submission can make others infinite (PSNR of an exact copy): a worker must still be able to record the job
    (PostgreSQL's JSON has no NaN) and the team's status must be answered as strict JSON."""
    import json as _json

    from skybench.server import queue
    from skybench.server.db import Submission, Team, sessions, utcnow

    client, tokens, app = server
    with sessions(app.state.engine)() as s:
        team = s.query(Team).filter_by(name="alpha").one()
        now = utcnow()
        s.add(Submission(id="e" * 32, team_id=team.id, track="lens-space", name="m1", sha256="0" * 64,
                         phase="open", state="running", received_at=now, queued_at=now, running_at=now,
                         lease_owner="w", lease_expires=now, counted=True, reason="", log="", metrics={},
                         attempt=1))
        s.commit()
        assert queue.finish(s, "e" * 32, "w", {"public_auroc": 0.9, "public_real_lens_recall": float("nan"),
                                               "public_tpr0": float("inf"), "n_lens": 3})
    for url in (f"/api/submissions/{'e' * 32}", "/api/submissions"):
        r = client.get(url, headers=_auth(tokens["alpha"]))
        assert r.status_code == 200, (url, r.status_code, r.text[:200])
        _json.loads(r.text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))  # strict JSON
    shown = client.get(f"/api/submissions/{'e' * 32}", headers=_auth(tokens["alpha"])).json()["metrics"]
    assert shown == {"public_auroc": 0.9, "public_real_lens_recall": None, "public_tpr0": None}


def test_uploads_refused_for_quota_store_nothing(server, cfg):
    """An upload refused at the queue costs no quota, so it must cost no disk: a team out of quota could otherwise
    fill the store with valid uploads (a few KiB of gzip each, unpacking to ``max_unpacked_bytes``) until every
    team's upload is refused as 'store full'."""
    from skybench.server.storage import Store

    client, tokens, _ = server
    objects = Store(cfg.storage, cfg.upload).objects
    for i in range(3):  # per_day: 3
        assert _upload(client, tokens["alpha"], pack("alpha", f"q{i}"), name=f"q{i}").status_code == 202
    stored = {p.name for p in objects.glob("*/*")}
    for pad in range(1, 4):
        r = _upload(client, tokens["alpha"], pack("alpha", "q9", pad=3_000_000 + pad), name="q9")
        assert r.status_code == 429 and "quota" in r.json()["detail"], r.text
    assert {p.name for p in objects.glob("*/*")} == stored, "refused uploads left folders in the store"


def test_parallel_uploads_past_the_quota_store_nothing(server, cfg):
    """The same with uploads sent at once by a team with one unit left: each passes the early quota check while
    the others are being unpacked, all are stored, one is queued; the refused ones must leave the store too (a
    race per unit would otherwise keep ~threads x ``max_unpacked_bytes``)."""
    import threading

    from skybench.server.storage import Store

    client, tokens, _ = server
    objects = Store(cfg.storage, cfg.upload).objects
    for i in range(2):  # per_day: 3; one left
        assert _upload(client, tokens["alpha"], pack("alpha", f"q{i}"), name=f"q{i}").status_code == 202
    before = {p.name for p in objects.glob("*/*")}
    bodies = [pack("alpha", f"r{i}", pad=3_000_000 + i) for i in range(6)]
    codes: list[int] = []
    threads = [threading.Thread(target=lambda i=i: codes.append(
        _upload(client, tokens["alpha"], bodies[i], name=f"r{i}").status_code)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [202, *[429] * 5], codes
    assert len({p.name for p in objects.glob("*/*")} - before) == 1, "refused uploads left folders in the store"


def test_a_team_holds_at_most_max_in_flight_uploads_and_others_are_not_held(server, cfg):
    """Quotas are checked once a body is in; before that a team (quota or none) could keep any number of bodies of
    ``max_bytes`` in flight (disk, bandwidth, a thread each). One more than ``upload.max_in_flight`` is refused
    before its body is read, for that team only, and the slot is free again when an upload ends."""
    from sqlalchemy import select

    from skybench.server.db import Team, sessions

    client, tokens, app = server
    with sessions(app.state.engine)() as s:
        alpha = s.scalars(select(Team).where(Team.name == "alpha")).one()
    slots = app.state.uploads
    with contextlib.ExitStack() as held:  # alpha's uploads in progress (slow bodies still arriving)
        for _ in range(cfg.upload.max_in_flight):
            held.enter_context(slots.hold(alpha.id))
        r = _upload(client, tokens["alpha"], pack("alpha", "m1"))
        assert r.status_code == 429 and "already in progress" in r.json()["detail"], r.text
        assert _upload(client, tokens["beta"], pack("beta", "m1")).status_code == 202  # another team goes on
    assert _upload(client, tokens["alpha"], pack("alpha", "m1")).status_code == 202
    r = client.get("/api/submissions", headers=_auth(tokens["alpha"]))
    assert [x["name"] for x in r.json()] == ["m1"]  # the refused one kept nothing


def test_a_date_pyyaml_refuses_in_submission_yaml_is_a_422_not_a_500(server):
    """`description: 2027-13-45` made PyYAML raise a bare ValueError in the intake's schema check: 500, and the
    team learnt nothing. Now a 422 naming the line, no quota, nothing kept; a track that is not this challenge's
    is named with the challenge's tracks (whatever their phase), not as "open"."""
    client, tokens, _ = server
    data = pack("alpha", "m1", more_yaml="description: 2027-13-45\n")
    r = _upload(client, tokens["alpha"], data)
    assert r.status_code == 422 and "YAML syntax error at line 6" in r.json()["detail"], r.text
    assert client.get("/api/submissions", headers=_auth(tokens["alpha"])).json() == []
    store = server[2].state.store
    assert list(store.objects.iterdir()) == [] and list(store.incoming.iterdir()) == [], "nothing kept"
    r = _upload(client, tokens["alpha"], pack("alpha", "w", track="wl-maps"), track="wl-maps", name="w")
    assert r.status_code == 404 and "this challenge's tracks: " in r.json()["detail"], r.text
