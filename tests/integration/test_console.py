"""The web console through Flask's test client, on the real Redis: authentication, CSRF,
escaping, security headers, secrets, masking, paging, confirmations, export, mounting under a
prefix; and ``limechat-events web`` as a real server."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
import redis
from flask import Flask, Response
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.test import Client

from producer import contract
from producer.errors import ConfigError
from tests.chaos.redis_server import free_port
from tests.helpers import TEST_TOKEN, WorkerProcess, run_cli, worker_env
from tests.integration.console_support import WEB_PASSWORD, WEB_USER, basic, running_console
from tests.integration.test_dlq import PHONE, event
from worker.console import ConsoleSettings, create_app
from worker.console.app import CSP
from worker.console.auth import loopback_only
from worker.deadletter import DeadLetters
from worker.operations import Ops
from worker.outcome import Reason
from worker.settings import OperatorSettings

pytestmark = pytest.mark.integration

SCRIPT = "<script>alert(1)</script>"
SETTINGS = ConsoleSettings(user=WEB_USER, password=WEB_PASSWORD, secret="test-secret")
AUTH = basic()


@pytest.fixture
def app(redis_url: str) -> Flask:
    return create_app(Ops(OperatorSettings(redis_url=redis_url)), SETTINGS)


@pytest.fixture
def client(app: Flask) -> Iterator[FlaskClient]:
    with app.test_client() as c:
        yield c


@pytest.fixture
def dead(r: redis.Redis) -> list[str]:
    """Twelve dead letters, oldest first: the first named ``<script>...``, the next five
    ``signup`` 401s (auth), the rest ``order_placed`` 400s whose answer holds a phone."""
    letters = DeadLetters(r)
    start = time.time() - 600
    ids = []
    for i in range(12):
        if i == 0:
            e, reason, status = event(SCRIPT, i=i), Reason.HTTP_4XX, 400
        elif i <= 5:
            e, reason, status = event("signup", i=i), Reason.AUTH, 401
        else:
            e, reason, status = event(i=i), Reason.HTTP_4XX, 400
        body = f'{{"error": "bad phone {PHONE}"}}'
        letters.add(e, reason, status=status, response_body=body, error="refused", now=start + i)
        ids.append(e["id"])
    return ids


def text(c: FlaskClient, path: str, status: int = 200) -> str:
    answer = c.get(path, headers=AUTH)
    assert answer.status_code == status, (path, answer.status_code, answer.text[:500])
    return answer.text


def status(c: FlaskClient, path: str, headers: dict[str, str] | None = None) -> int:
    with c.get(path, headers=headers or {}) as answer:  # (a static file's answer holds it open)
        return answer.status_code


def token_of(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page)
    assert found, "no CSRF token on the page"
    return found.group(1)


def test_every_page_needs_the_password_but_healthz(client: FlaskClient, dead: list[str]) -> None:
    for path in [
        "/",
        "/dlq",
        f"/dlq/entry/{dead[0]}",
        "/retries",
        "/metrics",
        "/api/stats",
        "/dlq/export",
        "/static/console.css",
    ]:
        assert status(client, path) == 401, path
        with client.get(path) as challenged:
            assert challenged.headers["WWW-Authenticate"].startswith("Basic ")
        assert status(client, path, basic(password="wrong")) == 401, path
        assert status(client, path, basic(user="admin")) == 401, path
        assert status(client, path, AUTH) == 200, path
    assert client.get("/healthz").status_code == 200


def test_no_password_and_no_hook_is_refused_and_a_hook_replaces_basic(redis_url: str) -> None:
    ops = Ops(OperatorSettings(redis_url=redis_url))
    with pytest.raises(ConfigError, match="LIMECHAT_WEB_PASSWORD"):
        create_app(ops, ConsoleSettings(password=""))

    def host_login(request: object) -> str | Response | None:
        cookie = getattr(request, "cookies", {}).get("host-session")
        if cookie == "alice":
            return "alice"
        if cookie == "bob":
            return None
        return Response("", 302, {"Location": "/login"})

    c = create_app(ops, ConsoleSettings(password=""), authorize=host_login).test_client()
    assert c.get("/dlq").status_code == 302
    c.set_cookie("host-session", "bob")
    assert c.get("/dlq").status_code == 403
    c.set_cookie("host-session", "alice")
    assert c.get("/dlq").status_code == 200


def test_a_post_without_the_csrf_token_or_from_another_origin_changes_nothing(
    client: FlaskClient, r: redis.Redis, dead: list[str]
) -> None:
    form = {"action": "purge", "scope": "matching"}
    for path in ("/dlq/confirm", "/dlq/act"):
        refused = client.post(path, data=form, headers=AUTH)
        assert refused.status_code == 403 and "CSRF" in refused.text
        wrong = client.post(path, data={**form, "csrf_token": "0" * 64}, headers=AUTH)
        assert wrong.status_code == 403
    token = token_of(text(client, "/dlq"))
    elsewhere = client.post(
        "/dlq/act",
        data={**form, "csrf_token": token},
        headers={**AUTH, "Origin": "https://evil.example"},
    )
    assert elsewhere.status_code == 403 and "Origin" in elsewhere.text
    cross = client.post(
        "/dlq/act",
        data={**form, "csrf_token": token},
        headers={**AUTH, "Sec-Fetch-Site": "cross-site", "Origin": "null"},
    )
    assert cross.status_code == 403 and "Sec-Fetch-Site" in cross.text
    assert r.zcard(contract.DLQ_INDEX) == 12
    # ... and with the token, from this origin, the purge happens.
    done = client.post(
        "/dlq/act",
        data={**form, "csrf_token": token},
        headers={**AUTH, "Origin": "http://localhost"},
    )
    assert done.status_code == 200, done.text
    assert r.zcard(contract.DLQ_INDEX) == 0


def test_an_event_named_script_renders_as_text(client: FlaskClient, dead: list[str]) -> None:
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    for path in ["/dlq", f"/dlq/entry/{dead[0]}", f"/dlq?event={SCRIPT}"]:
        page = text(client, path)
        assert SCRIPT not in page, path
        assert escaped in page, path
    token = token_of(text(client, "/dlq"))
    confirm = client.post(
        "/dlq/confirm",
        data={"csrf_token": token, "action": "purge", "scope": "selected", "ids": dead[0]},
        headers=AUTH,
    )
    assert SCRIPT not in confirm.text and escaped in confirm.text


def test_security_headers_on_every_answer(client: FlaskClient, dead: list[str]) -> None:
    for answer in (client.get("/healthz"), client.get("/dlq"), client.get("/", headers=AUTH)):
        assert answer.headers["Content-Security-Policy"] == CSP
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["Referrer-Policy"] == "no-referrer"
    page = text(client, "/")
    assert "<script>" not in page.replace('<script src="/static/console.js" defer></script>', "")
    assert " style=" not in page  # (the CSP forbids inline styles: they would not apply)


def test_phones_masked_and_entry_shows_body_history_and_error(
    client: FlaskClient, dead: list[str]
) -> None:
    page = text(client, f"/dlq/entry/{dead[7]}")
    assert PHONE not in page and PHONE[1:] not in page
    assert "+91******2780" in page
    assert "bad phone" in page and "refused" in page and "order_placed" in page
    assert "503" in page  # the attempt history's status
    assert text(client, "/dlq/entry/no-such-id", 404)


def test_secrets_never_appear(redis_url: str, client: FlaskClient, dead: list[str]) -> None:
    pages = [text(client, p) for p in ["/", "/dlq", f"/dlq/entry/{dead[3]}", "/retries"]]
    pages.append(client.get("/api/stats", headers=AUTH).text)
    pages.append(client.get("/dlq/export", headers=AUTH).text)
    for page in pages:
        assert WEB_PASSWORD not in page and TEST_TOKEN not in page
    # Redis failing: the page says so (503) without the password in REDIS_URL.
    secret = "hunter2-redis-secret"
    down = Ops(OperatorSettings(redis_url=f"redis://:{secret}@127.0.0.1:{free_port()}/0"))
    c = create_app(down, SETTINGS).test_client()
    for path in ("/", "/dlq", "/healthz"):
        answer = c.get(path, headers=AUTH)
        assert answer.status_code == 503, path
        assert secret not in answer.text, path
    assert "Redis" in c.get("/dlq", headers=AUTH).text


def test_pages_go_newest_first_by_cursor_and_filters_narrow_them(
    client: FlaskClient, dead: list[str]
) -> None:
    seen: list[str] = []
    path: str | None = "/dlq?limit=5"
    while path is not None:
        page = text(client, path)
        seen += re.findall(r'name="ids" value="([^"]+)"', page)
        nxt = re.search(r'id="next" href="([^"]+)"', page)
        path = nxt.group(1).replace("&amp;", "&") if nxt else None
        assert len(seen) <= 12
    assert seen == dead[::-1]
    auth = text(client, "/dlq?reason=auth&order=oldest")
    assert re.findall(r'name="ids" value="([^"]+)"', auth) == dead[1:6]
    assert "5 matching" in auth
    bad = client.get("/dlq?status=6xx", headers=AUTH)
    assert bad.status_code == 400 and "--status" in bad.text


def test_a_rare_filter_reads_a_bounded_stretch_per_page(
    client: FlaskClient, dead: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.console import views

    monkeypatch.setattr(views, "SCAN_LIMIT", 4)
    seen: list[str] = []
    path: str | None = "/dlq?reason=auth&order=oldest&limit=25"
    shorts = 0
    while path is not None:
        page = text(client, path)
        shorts += 'id="short"' in page
        seen += re.findall(r'name="ids" value="([^"]+)"', page)
        nxt = re.search(r'id="next" href="([^"]+)"', page)
        path = nxt.group(1).replace("&amp;", "&") if nxt else None
        assert shorts < 10
    assert seen == dead[1:6] and shorts >= 1


def test_confirmation_states_the_count_then_replay_queues_exactly_that(
    client: FlaskClient, r: redis.Redis, dead: list[str]
) -> None:
    token = token_of(text(client, "/dlq"))
    form = {"csrf_token": token, "action": "replay", "scope": "matching", "event": "order_placed"}
    confirm = client.post("/dlq/confirm", data=form, headers=AUTH)
    assert confirm.status_code == 200
    assert 'data-count="6"' in confirm.text and "Replay 6 dead letters?" in confirm.text
    # The confirmation pins the time range it counted: the action takes that range.
    act = {
        k: v
        for k, v in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', confirm.text)
    }
    assert act["until"] and act["event"] == "order_placed"
    done = client.post("/dlq/act", data=act, headers=AUTH)
    assert 'data-done="6"' in done.text
    assert r.zcard(contract.DLQ_INDEX) == 6 and r.llen(contract.QUEUE) > 0

    # A selection: two ticked boxes, one of them gone meanwhile.
    form = {"csrf_token": token, "action": "purge", "scope": "selected", "ids": dead[1:3]}
    client.post("/dlq/act", data={**form, "ids": [dead[1]]}, headers=AUTH)
    confirm = client.post("/dlq/confirm", data=form, headers=AUTH)
    assert "Purge 1 dead letter?" in confirm.text
    nothing = client.post("/dlq/confirm", data={**form, "ids": []}, headers=AUTH)
    assert nothing.status_code == 400 and "no entries selected" in nothing.text


def test_export_downloads_what_the_filter_matches_as_json_lines(
    client: FlaskClient, dead: list[str]
) -> None:
    answer = client.get("/dlq/export?reason=auth", headers=AUTH)
    assert answer.status_code == 200
    assert "attachment" in answer.headers["Content-Disposition"]
    lines = [json.loads(line) for line in answer.text.splitlines()]
    assert [e["event_id"] for e in lines] == dead[1:6]


def test_mounted_under_a_prefix_its_links_work(app: Flask, dead: list[str]) -> None:
    host = Flask("host")
    host.wsgi_app = DispatcherMiddleware(host.wsgi_app, {"/ops/limechat": app})  # type: ignore[method-assign]
    c = Client(host)
    page = c.get("/ops/limechat/dlq", headers=AUTH).get_data(as_text=True)
    links = set(re.findall(r'(?:href|src|action|data-stats-url)="(/[^"]*)"', page))
    assert links and all(link.startswith("/ops/limechat/") for link in links), links
    for link in links:
        if "export" in link or "metrics" in link or "confirm" in link:
            continue
        with c.get(link.replace("&amp;", "&"), headers=AUTH) as answer:
            assert answer.status_code == 200, link
    assert c.get("/ops/limechat/healthz").status_code == 200


def test_metrics_are_served_behind_the_same_login(client: FlaskClient, dead: list[str]) -> None:
    assert client.get("/metrics").status_code == 401
    answer = client.get("/metrics", headers=AUTH)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/plain; version=")
    families = {f.name: f for f in text_string_to_metric_families(answer.text)}
    assert families["limechat_dlq_entries"].samples, answer.text[:2000]
    assert sum(s.value for s in families["limechat_dlq_entries"].samples) == len(dead)


def test_overview_shows_what_stats_shows(
    client: FlaskClient, redis_url: str, dead: list[str]
) -> None:
    page = text(client, "/")
    stats = json.loads(client.get("/api/stats", headers=AUTH).text)
    assert stats["dlq"]["depth"] == 12
    assert re.search(r'data-stat="dlq.depth">12<', page)
    assert re.search(r'data-stat="dlq.by_reason.auth">5<', page)
    assert "no data" in page or "<svg" in page


def test_the_web_command_refuses_an_open_console_off_loopback(redis_url: str) -> None:
    env = worker_env(redis_url, "http://127.0.0.1:9/")
    done = run_cli(env, "web", "--host", "0.0.0.0", "--port", str(free_port()))
    assert done.returncode == 2
    assert "LIMECHAT_WEB_PASSWORD is not set" in done.stderr


def test_the_web_command_serves_the_console(redis_url: str, dead: list[str]) -> None:
    env = worker_env(
        redis_url,
        "http://127.0.0.1:9/",
        LIMECHAT_WEB_PASSWORD=WEB_PASSWORD,
        LIMECHAT_WEB_USER=WEB_USER,
    )
    with running_console(env) as (_, url):
        with urllib.request.urlopen(url + "healthz", timeout=30) as answer:
            assert answer.status == 200
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url + "dlq", timeout=30)
        assert refused.value.code == 401
        refused.value.close()
        asked = urllib.request.Request(url + "dlq", headers=AUTH)
        with urllib.request.urlopen(asked, timeout=30) as answer:
            assert "signup" in answer.read().decode()


def test_up_starts_the_console_on_loopback_and_prints_its_url(
    env: dict[str, str], dead: list[str]
) -> None:
    port = free_port()
    env = {**env, "LIMECHAT_WORKER_PROCESSES": "1"}
    argv = ["-m", "worker", "up", "--sandbox-port", str(free_port()), "--web-port", str(port)]
    up = WorkerProcess(env, argv).start()
    try:
        assert up.saw(f"console: http://127.0.0.1:{port}/"), up.text()
        assert up.saw("LIMECHAT_WEB_PASSWORD is not set")
        # No password: this machine is let in (the console listens on loopback only).
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/dlq", timeout=30) as answer:
            assert "signup" in answer.read().decode()
    finally:
        up.stop()


def test_a_confirmed_range_ending_in_the_future_takes_nothing_dead_lettered_after(
    client: FlaskClient, r: redis.Redis, dead: list[str]
) -> None:
    # Given a purge of every http_4xx entry until 2099, confirmed with its count
    token = token_of(text(client, "/dlq"))
    form = {
        "csrf_token": token,
        "action": "purge",
        "scope": "matching",
        "reason": "http_4xx",
        "until": "2099-01-01T00:00:00Z",
    }
    confirm = client.post("/dlq/confirm", data=form, headers=AUTH)
    assert "Purge 7 dead letters?" in confirm.text
    act = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', confirm.text))
    # When three more arrive before the operator clicks
    later = [event(i=100 + i) for i in range(3)]
    for e in later:
        DeadLetters(r).add(e, Reason.HTTP_4XX, status=400, now=time.time() + 5)
    done = client.post("/dlq/act", data=act, headers=AUTH)
    # Then the purge takes the seven it stated, not the three it never showed
    assert 'data-done="7"' in done.text
    left = {e["event_id"] for e in DeadLetters(r).list()}
    assert {e["id"] for e in later} <= left


def test_a_console_without_a_password_answers_only_to_loopback_names(redis_url: str) -> None:
    # (a page elsewhere could rebind its own name to 127.0.0.1: its Host header gives it away)
    ops = Ops(OperatorSettings(redis_url=redis_url))
    app = create_app(ops, ConsoleSettings(password=""), authorize=loopback_only)
    c = app.test_client()
    local = {"REMOTE_ADDR": "127.0.0.1"}
    for host in ("127.0.0.1:8780", "localhost:8780", "[::1]:8780", "localhost"):
        assert c.get("/dlq", base_url=f"http://{host}", environ_base=local).status_code == 200
    for host in ("attacker.example:8780", "127.0.0.1.nip.io", "evil"):
        answer = c.get("/dlq", base_url=f"http://{host}", environ_base=local)
        assert answer.status_code in (401, 403), host
    far = {"REMOTE_ADDR": "192.0.2.7"}
    assert c.get("/dlq", base_url="http://127.0.0.1:8780", environ_base=far).status_code in (
        401,
        403,
    )
