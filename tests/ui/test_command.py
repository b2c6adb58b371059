"""``promissory ui``: serves on loopback with a token in the URL it prints, refuses a
non-loopback address without a token, and stops on SIGINT."""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request

import pytest

from tests.cli.kit import Procs, child_env, one_clean_line, promissory_args, run

pytestmark = pytest.mark.timeout(60)


def get(url: str, **headers: str) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_it_prints_a_url_with_a_random_token_and_serves_it_until_sigint(
    procs: Procs, dsn: str
) -> None:
    view = procs.start(promissory_args(dsn, "ui", "--port", "0"))
    line = view.wait_for_line(r"^promissory ui: (http://127\.0\.0\.1:\d+/\?token=(\w+))  ")
    url, token = line.group(1), line.group(2)
    assert len(token) >= 32
    status, text = get(url)
    assert status == 200 and "Supervision forest" in text
    assert get(url.split("?")[0])[0] == 403
    view.send(signal.SIGINT)
    assert view.wait(20) == 0
    assert "Traceback" not in view.stderr


def test_json_says_where_it_serves(procs: Procs, dsn: str) -> None:
    view = procs.start(promissory_args(dsn, "ui", "--port", "0", "--token", "abc", "--json"))
    serving = json.loads(view.wait_for_line(r'^\{"event":"serving"').string)
    assert serving["host"] == "127.0.0.1" and serving["port"] > 0
    assert serving["url"].endswith("/?token=abc")
    assert get(serving["url"].split("?")[0], Authorization="token abc")[0] == 200
    view.send(signal.SIGTERM)
    assert view.wait(20) == 0


def test_no_token_is_refused_off_loopback_before_anything_starts(tmp_path: object) -> None:
    env = child_env(None, tmp_path / "home")  # type: ignore[operator]
    done = run(promissory_args(None, "ui", "--host", "0.0.0.0", "--no-token"), env, timeout=30)
    assert done.returncode == 2
    line = one_clean_line(done)
    assert "refusing to serve on 0.0.0.0" in line and "without a token" in line
    assert not (tmp_path / "home" / "pgdata").exists()  # type: ignore[operator]


def test_no_token_on_loopback_serves_without_one(procs: Procs, dsn: str) -> None:
    view = procs.start(promissory_args(dsn, "ui", "--port", "0", "--no-token", "--json"))
    serving = json.loads(view.wait_for_line(r'^\{"event":"serving"').string)
    assert "token" not in serving["url"]
    assert get(serving["url"])[0] == 200
    view.send(signal.SIGINT)
    assert view.wait(20) == 0
