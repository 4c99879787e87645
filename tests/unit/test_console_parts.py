"""The console's pure parts: who may serve without a password, CSRF tokens, the chart, the
settings; and that the producer side never loads Flask."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import ROOT
from worker.console.auth import check_can_serve, is_loopback
from worker.console.chart import svg
from worker.console.csrf import Csrf
from worker.console.settings import ConsoleSettings, environment_variables


def test_importing_the_producer_loads_nothing_of_the_console() -> None:
    code = (
        "import sys, producer\n"
        "from producer import Producer, send_event\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('flask', 'werkzeug', 'jinja2')"
        " or m.startswith('worker.console')]\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_only_loopback_may_serve_without_a_password() -> None:
    for host in ("127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"):
        assert is_loopback(host) and check_can_serve(host, "") is None, host
    for host in ("0.0.0.0", "::", "192.168.1.5", "example.com"):
        problem = check_can_serve(host, "")
        assert problem is not None and "LIMECHAT_WEB_PASSWORD" in problem, host
        assert check_can_serve(host, "pw") is None


def test_csrf_tokens_are_per_user_and_per_secret() -> None:
    one, other = Csrf("a"), Csrf("b")
    assert one.token("admin") == Csrf("a").token("admin")
    assert one.token("admin") != one.token("alice")
    assert one.token("admin") != other.token("admin")
    assert Csrf().token("admin") != Csrf().token("admin")  # random secret per process


def test_settings_from_the_environment_keep_secrets_out_of_repr() -> None:
    settings = ConsoleSettings.from_env(
        {"LIMECHAT_WEB_PASSWORD": "pw-shh ", "LIMECHAT_WEB_SECRET": "sec-shh"}
    )
    assert settings.user == "admin" and settings.password == "pw-shh "
    assert "shh" not in repr(settings)
    assert environment_variables() == {
        "LIMECHAT_WEB_USER": "admin",
        "LIMECHAT_WEB_PASSWORD": "",
        "LIMECHAT_WEB_SECRET": "",
    }


def test_the_chart_draws_a_line_per_series_or_says_no_data() -> None:
    assert "no data" in svg([])
    points = [
        {"minute": 60 * m, "delivered": m, "retried": 1, "dead_lettered": 0} for m in range(60)
    ]
    drawn = str(svg(points))
    assert drawn.count("<polyline") == 3 and "style=" not in drawn
    assert ">59<" in drawn  # the top of the scale
    assert "delivered 1770" in drawn  # the hour's total, in the legend
