"""The HTML pages (FastAPI TestClient) on SQLite and PostgreSQL: log-in, isolation, CSRF, cookie flags, escaping."""

from __future__ import annotations

import re
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import mlflow_store  # noqa: E402
from test_api import pack  # noqa: E402

EVIL = "<script>alert(1)</script>"


@pytest.fixture
def web(cfg, engine, tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    from skybench.server.app import create_app
    from skybench.server.auth import add_team
    from skybench.server.db import sessions

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    app = create_app(cfg, engine)
    with sessions(engine)() as s:
        tokens = {n: add_team(s, n).token for n in ("alpha", "beta")}
    yield app, tokens


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "no CSRF field in the form"
    return m.group(1)


def _visible(html: str) -> str:
    """A page without its random values (a CSRF token may hold any short text, "m1" among others)."""
    return re.sub(r'value="[^"]*"', 'value=""', html)


def login(app, token: str) -> TestClient:  # type: ignore[no-untyped-def]
    client = TestClient(app, follow_redirects=False)
    r = client.post("/login", data={"token": token, "csrf": _csrf(client.get("/login").text)})
    assert r.status_code == 303 and r.headers["location"] == "/team", r.text
    return client


def _submit(client: TestClient, data: bytes, name: str = "m1", csrf: str | None = "auto", **headers: str):
    form = {"track": "lens-space", "name": name}
    if csrf == "auto":
        csrf = _csrf(client.get("/submit").text)
    if csrf is not None:
        form["csrf"] = csrf
    return client.post("/submit", data=form, files={"file": ("m.tar.gz", data, "application/gzip")},
                       headers=headers)


def test_no_team_page_without_login(web):
    app, tokens = web
    client = TestClient(app, follow_redirects=False)
    for path in ("/team", "/submit", "/team/submissions/" + "0" * 32):
        r = client.get(path)
        assert r.status_code == 303 and r.headers["location"] == "/login", path
    assert client.get("/team/submissions/" + "0" * 32 + "/plots/roc_public.png").status_code == 404
    r = _submit(client, pack("alpha", "m1"), csrf="x")
    assert r.status_code == 303 and r.headers["location"] == "/login"
    # A wrong token is refused, and counts towards the rate limit shared with the API.
    bad = client.post("/login", data={"token": "sbt_AAAAAAAAAAAAAAAA_" + "A" * 43,
                                      "csrf": _csrf(client.get("/login").text)})
    assert bad.status_code == 401 and "not valid" in bad.text and "skybench_session=" not in bad.headers.get(
        "set-cookie", "").replace("skybench_session=\"\"", "")
    assert client.get("/team").status_code == 303
    for _ in range(2):  # auth.max_failures is 3 in the test config: then even the right token waits
        client.post("/login", data={"token": "nope", "csrf": _csrf(client.get("/login").text)})
    limited = client.post("/login", data={"token": tokens["alpha"], "csrf": _csrf(client.get("/login").text)})
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    # A forged cookie (not signed with the server's secret) is no session either.
    client.cookies.set("skybench_session", "eyJ0ZWFtIjoxfQ.forged.sig")
    assert client.get("/team").status_code == 303


def test_session_cookie_flags_and_logout(web):
    app, tokens = web
    client = TestClient(app, follow_redirects=False)
    csrf = _csrf(client.get("/login").text)
    r = client.post("/login", data={"token": tokens["alpha"], "csrf": csrf})
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("skybench_session=")
    flags = {f.strip().lower() for f in cookie.split(";")[1:]}
    assert "httponly" in flags and "samesite=strict" in flags and "path=/" in flags
    assert "secure" not in flags  # plain http (the TestClient); over https it is set, next test
    assert tokens["alpha"] not in cookie  # the token itself is never in the cookie
    page = client.get("/team")
    assert page.status_code == 200 and "Team alpha" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert client.post("/logout", data={"csrf": _csrf(page.text)}).status_code == 303
    assert client.get("/team").status_code == 303


def test_logout_ends_the_session_on_the_server(web):
    """A copy of the session cookie taken before logging out (another machine's browser, a stolen cookie) is
    refused after it: the server forgets the session, it does not only ask the browser to delete its cookie.
    Another session of the same team (a team-mate's log-in) goes on."""
    app, tokens = web
    client = login(app, tokens["alpha"])
    mate = login(app, tokens["alpha"])
    copied = client.cookies.get("skybench_session")
    assert copied
    page = client.get("/team")
    assert page.status_code == 200
    assert client.post("/logout", data={"csrf": _csrf(page.text)}).status_code == 303
    thief = TestClient(app, follow_redirects=False)
    thief.cookies.set("skybench_session", copied)
    for path in ("/team", "/submit"):
        r = thief.get(path)
        assert r.status_code == 303 and r.headers["location"] == "/login", \
            f"{path}: the cookie copied before logging out still opens the team's pages ({r.status_code})"
    assert mate.get("/team").status_code == 200


def test_logging_in_again_and_again_costs_one_hash_and_holds_a_bounded_number_of_sessions(web, engine, monkeypatch):
    """A team logging in over and over (one token, any number of connections and addresses) ran one argon2 check
    per log-in (64 MiB, up to ~0.8 s of a core): other teams' requests went from 11 ms to 4 s. A right token is
    now checked once a minute (the token cache the API uses), and each log-in past MAX_SESSIONS ends the team's
    oldest session, so the table does not grow with them."""
    from sqlalchemy import func, select

    from skybench.server import auth
    from skybench.server.db import WebSession, sessions
    from skybench.server.web import MAX_SESSIONS

    app, tokens = web
    hashes = []

    class Counted:  # argon2's own hasher, its checks counted
        def __init__(self, hasher):  # type: ignore[no-untyped-def]
            self.hasher = hasher

        def verify(self, *args):  # type: ignore[no-untyped-def]
            hashes.append(1)
            return self.hasher.verify(*args)

        def hash(self, *args):  # type: ignore[no-untyped-def]
            return self.hasher.hash(*args)

    monkeypatch.setattr(auth, "_HASHER", Counted(auth._HASHER))
    clients = [login(app, tokens["alpha"]) for _ in range(MAX_SESSIONS + 5)]
    assert len(hashes) == 1
    with sessions(engine)() as s:
        held = s.scalar(select(func.count()).select_from(WebSession))
    assert held == MAX_SESSIONS
    assert clients[-1].get("/team").status_code == 200  # the newest log-ins hold
    assert clients[0].get("/team").status_code == 303  # the oldest were ended
    beta = login(app, tokens["beta"])  # another team's sessions are its own
    assert beta.get("/team").status_code == 200 and clients[-1].get("/team").status_code == 200


def test_when_every_hashing_slot_is_taken_a_token_check_waits_then_gets_503(web):
    """Argon2 checks at once are bounded per server process (auth.max_hashing): one more waits for a slot, then is
    answered 503 with Retry-After, and the client's failure count is given back."""
    app, tokens = web
    slots = app.state.limiter.hashing
    taken = 0
    while slots.acquire(blocking=False):  # every slot busy, as under a flood of other log-ins
        taken += 1
    try:
        assert taken == app.state.cfg.auth.max_hashing
        client = TestClient(app, follow_redirects=False)
        r = client.post("/login", data={"token": tokens["alpha"], "csrf": _csrf(client.get("/login").text)})
        assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1 and "busy" in r.text
        api = client.get("/api/me", headers={"Authorization": f"Bearer {tokens['beta']}"})
        assert api.status_code == 503 and "busy" in api.json()["detail"]
        # a token that is malformed or names no token id costs no slot: refused at once, unhashed (hashing them
        # let junk from many addresses hold every slot while the teams' checks got 503)
        unknown = "sbt_" + "0" * len(tokens["beta"].split("_")[1]) + "_" + tokens["beta"].split("_", 2)[2]
        for junk in ("x", unknown):
            r = client.get("/api/me", headers={"Authorization": f"Bearer {junk}"})
            assert r.status_code == 401 and "invalid" in r.json()["detail"], (junk, r.status_code)
    finally:
        for _ in range(taken):
            slots.release()
    for _ in range(app.state.cfg.auth.max_failures + 1):  # not counted as failures: the right token goes in
        assert login(app, tokens["alpha"]).get("/team").status_code == 200


def test_team_pages_and_answers_are_not_stored_by_caches(web):
    """A team's pages (its submissions, a form with its session's CSRF token) and its API answers say no-store: a
    shared cache in front of the server must not hand one team's page to another visitor."""
    app, tokens = web
    a = login(app, tokens["alpha"])
    assert _submit(a, pack("alpha", "m1")).status_code == 303
    sub = a.get("/api/submissions", headers={"Authorization": f"Bearer {tokens['alpha']}"})
    assert sub.headers.get("cache-control") == "no-store"
    for path in ("/", "/login", "/team", "/submit", f"/team/submissions/{sub.json()[0]['id']}",
                 "/tracks/lens-space"):
        r = a.get(path)
        assert r.status_code == 200 and r.headers.get("cache-control") == "no-store", path
    assert "no-store" not in a.get("/static/style.css").headers.get("cache-control", "")


def test_no_page_of_the_server_loads_a_script_from_elsewhere(web):
    """FastAPI's docs page loads Swagger UI from a CDN (no pinned version or integrity hash) on the session's origin:
    a compromised package would act as the logged-in team. The server has no docs page, only the OpenAPI JSON."""
    app, _ = web
    client = TestClient(app)
    assert client.get("/api/docs").status_code == 404
    assert client.get("/api/openapi.json").json()["info"]["title"] == "skybench challenge server"
    assert "<script" not in client.get("/").text


def test_cookie_is_secure_over_https(web):
    app, tokens = web
    client = TestClient(app, base_url="https://challenge.example", follow_redirects=False)
    r = client.post("/login", data={"token": tokens["alpha"], "csrf": _csrf(client.get("/login").text)})
    assert r.status_code == 303
    assert "secure" in {f.strip().lower() for f in r.headers["set-cookie"].split(";")}


def test_rotated_token_ends_the_session(web, engine):
    from skybench.server.auth import rotate_token
    from skybench.server.db import sessions

    app, tokens = web
    client = login(app, tokens["alpha"])
    assert client.get("/team").status_code == 200
    with sessions(engine)() as s:
        rotate_token(s, "alpha")
    assert client.get("/team").status_code == 303


def test_upload_form_queues_and_team_b_gets_404(web):
    app, tokens = web
    a = login(app, tokens["alpha"])
    r = _submit(a, pack("alpha", "m1"))
    assert r.status_code == 303, r.text
    where = r.headers["location"]
    sub_id = where.rsplit("/", 1)[1]
    page = a.get(where)
    assert page.status_code == 200 and 'id="state">queued<' in page.text
    assert "m1" in _visible(a.get("/team").text)
    # The JSON API sees the same submission: the same store and queue.
    api = a.get(f"/api/submissions/{sub_id}", headers={"Authorization": f"Bearer {tokens['alpha']}"})
    assert api.status_code == 200 and api.json()["state"] == "queued" and api.json()["counted"]
    b = login(app, tokens["beta"])
    theirs, missing = b.get(where), b.get("/team/submissions/" + "0" * 32)
    assert theirs.status_code == missing.status_code == 404
    assert theirs.text.replace(sub_id, "X") == missing.text.replace("0" * 32, "X")
    assert b.get(f"{where}/plots/roc_public.png").status_code == 404
    assert "m1" not in _visible(b.get("/team").text)


def test_a_superseded_version_is_shown_as_such(web, engine):
    """A version replaced by a newer one of its entry before it ran: its state, reason and time on the team's pages
    and in the API, its unit given back."""
    from skybench.server import queue
    from skybench.server.db import sessions, utcnow

    app, tokens = web
    a = login(app, tokens["alpha"])
    old, new = (_submit(a, pack("alpha", "m1", pad=pad)).headers["location"].rsplit("/", 1)[1] for pad in (0, 8))
    Session = sessions(engine)
    with Session() as s:
        t0 = utcnow()
        assert queue.claim(s, "w", 60, now=t0).id == old
        assert queue.requeue(s, old, "w", "infrastructure failure: retried", delay_seconds=60)
        assert queue.claim(s, "w", 60, now=t0).id == new
        assert queue.finish(s, new, "w", {})
        assert queue.claim(s, "w", 60, now=t0 + timedelta(seconds=120)) is None
    page = a.get(f"/team/submissions/{old}").text
    assert 'id="state">superseded<' in page and "Superseded (UTC)" in page and "Reload this page" not in page
    assert f"superseded by a newer submission of this entry ({new}, received at " in page
    assert "state-superseded" in a.get("/team").text
    api = a.get(f"/api/submissions/{old}", headers={"Authorization": f"Bearer {tokens['alpha']}"}).json()
    assert api["state"] == "superseded" and api["superseded_at"] and not api["counted"]


def test_schema_error_on_the_form_is_shown_and_costs_nothing(web):
    app, tokens = web
    a = login(app, tokens["alpha"])
    r = _submit(a, pack("beta", "m1"))
    assert r.status_code == 422 and "key &#39;team&#39; is &#39;beta&#39;" in r.text
    store = app.state.store
    assert list(store.objects.iterdir()) == [] and list(store.incoming.iterdir()) == []
    assert "3 submissions left today" in a.get("/team").text


@pytest.mark.parametrize("attack", ["missing", "wrong", "other-session", "foreign-origin"])
def test_csrf_on_the_upload_form_is_refused_and_nothing_stored(web, attack):
    app, tokens = web
    a = login(app, tokens["alpha"])
    headers = {}
    if attack == "missing":
        csrf = None
    elif attack == "wrong":
        csrf = "x" * 43
    elif attack == "other-session":  # a valid token of another session (the attacker's own log-in)
        csrf = _csrf(login(app, tokens["beta"]).get("/submit").text)
    else:  # the right token, sent from another site
        csrf, headers = "auto", {"Origin": "https://evil.example"}
    r = _submit(a, pack("alpha", "m1"), csrf=csrf, **headers)
    assert r.status_code == 403, r.text
    store = app.state.store
    assert list(store.objects.iterdir()) == [] and list(store.incoming.iterdir()) == []
    assert a.get("/api/submissions", headers={"Authorization": f"Bearer {tokens['alpha']}"}).json() == []
    # The same form with the session's own token and no foreign Origin goes through.
    assert _submit(a, pack("alpha", "m1"), Origin="http://testserver").status_code == 303


def test_login_form_needs_its_csrf_token(web):
    app, tokens = web
    client = TestClient(app, follow_redirects=False)
    client.get("/login")
    r = client.post("/login", data={"token": tokens["alpha"]})
    assert r.status_code == 403 and "skybench_session" not in r.headers.get("set-cookie", "")
    assert client.get("/team").status_code == 303


def test_script_names_are_escaped(web, engine, monkeypatch):
    """A team or entry name with markup renders as text, on the team pages and the public leaderboard."""
    from skybench.server.db import Submission, Team, sessions, utcnow
    from skybench.tracking import log_evaluation

    app, tokens = web
    with sessions(engine)() as s:  # a name the CLI would refuse, written straight into the database
        team = s.get(Team, 1)
        team.name = EVIL
        s.add(Submission(id="e" * 32, team_id=team.id, track="lens-space", name=EVIL, sha256="0" * 64,
                         phase="open", state="failed", reason=EVIL, received_at=utcnow(), failed_at=utcnow()))
        s.commit()
    log_evaluation("lens-space", team=EVIL, name=EVIL, fmt="onnx", status="FINISHED",
                   metrics={"public_auroc": 0.91, "public_auroc_ci_low": 0.9, "public_auroc_ci_high": 0.92,
                            "public_tpr0": 0.25, "public_tpr0_ci_low": 0.2, "public_tpr0_ci_high": 0.3,
                            "auroc": 0.5, "private_auroc": 0.123456, "private_tpr0_ci_high": 0.777777},
                   tags={"submitted": "2026-01-01T00:00:00+00:00"})
    log_evaluation("lens-space", team=EVIL, name="broken", fmt="onnx", status="FAILED", metrics={},
                   tags={}, reason=EVIL)
    a = login(app, tokens["alpha"])
    for page in (a.get("/team"), a.get("/team/submissions/" + "e" * 32), a.get("/tracks/lens-space")):
        assert page.status_code == 200
        assert EVIL not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    board = a.get("/tracks/lens-space").text
    assert "0.910" in board and "[0.900, 0.920]" in board  # public part, rounded to 3 digits (public_score_digits)
    assert "0.250 <span class=\"ci\">[0.200, 0.300]</span>" in board  # a report metric's interval: in its cell
    assert "tpr0_ci_low" not in board  # ... not a column of its own
    assert "0.123" not in board and "0.500" not in board and "0.778" not in board  # no private or whole-set value
    assert "Entries without a score" in board


def test_leaderboard_is_the_cli_ranking_and_reveals_private_only_in_final(web, engine):
    from skybench.server import queue
    from skybench.server.db import sessions
    from skybench.tracking import log_evaluation

    app, _ = web
    for team, pub, priv in (("t1", 0.7, 0.95), ("t2", 0.9, 0.6)):
        log_evaluation("lens-space", team=team, name="e", fmt="onnx", status="FINISHED",
                       metrics={"public_auroc": pub, "private_auroc": priv}, tags={})
    client = TestClient(app)
    rows = re.findall(r'<td class="num">(\d+)</td><td>(t\d)</td>', client.get("/tracks/lens-space").text)
    assert rows == [("1", "t2"), ("2", "t1")]
    with sessions(engine)() as s:
        queue.set_phase(s, "lens-space", "closed")
    assert re.findall(r'<td class="num">(\d+)</td><td>(t\d)</td>', client.get("/tracks/lens-space").text) == rows
    with sessions(engine)() as s:
        queue.set_phase(s, "lens-space", "final")
    final = client.get("/tracks/lens-space").text
    assert re.findall(r'<td class="num">(\d+)</td><td>(t\d)</td>', final) == [("1", "t1"), ("2", "t2")]
    assert "0.9500" in final  # the private value, unrounded after the open phase
    assert client.get("/tracks/nope").status_code == 404
    assert "lens-space" in client.get("/").text


def test_board_reads_are_counted_per_address_and_answered_from_one_build(cfg, engine, tmp_path, monkeypatch):
    """Anyone may read a board (no token): 45 anonymous clients asking for a 1,000-run board held every server
    thread (each answer built and encoded anew, ~150 ms of a core) and a team's requests waited seconds. An
    address past ``max_board_reads_per_minute`` is answered 429, other addresses are not, and within the cache's
    seconds the answer is built once."""
    from skybench.server import phases
    from skybench.server.app import create_app

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    built: list[str] = []
    build = phases.live_board
    monkeypatch.setattr(phases, "live_board", lambda *a, **k: built.append(a[2]) or build(*a, **k))
    app = create_app(cfg.model_copy(update={"max_board_reads_per_minute": 5, "leaderboard_cache_seconds": 60}),
                     engine)
    one, other = TestClient(app, client=("192.0.2.1", 5000)), TestClient(app, client=("192.0.2.2", 5000))
    answers = [one.get("/api/tracks/lens-space/leaderboard") for _ in range(3)]
    answers += [one.get("/tracks/lens-space") for _ in range(2)]
    assert [r.status_code for r in answers] == [200] * 5 and built == ["lens-space"]
    assert len({r.content for r in answers[:3]}) == 1
    for path in ("/api/tracks/lens-space/leaderboard", "/tracks/lens-space"):
        r = one.get(path)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1, (path, r.status_code)
        assert other.get(path).status_code == 200
