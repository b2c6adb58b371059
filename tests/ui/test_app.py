"""The web view's application, without a browser: the token, the guard, escaping, the actions
(the same as the CLI's), and the pages' content."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from starlette.testclient import TestClient

from promissory import Context, Runtime, Store
from promissory.agents import Agent, ScriptedModel, call, reply, tool
from promissory.errors import PromiseCanceledError
from promissory.ui import create_app
from promissory.ui._app import parse_age
from promissory.ui._html import html
from promissory.ui._live import LiveFeed, _touches
from tests.kit import eventually

pytestmark = pytest.mark.timeout(60)

TOKEN = "t0ken-for-tests"
EVIL = "<script>window.__pwned = 1</script><img src=x onerror=alert(1)>"


@pytest.fixture
def client(store: Store) -> Iterator[TestClient]:
    app = create_app(store, token=TOKEN)
    with TestClient(app, base_url="http://127.0.0.1:8765") as c:
        yield c


def authed(client: TestClient) -> TestClient:
    client.get("/", params={"token": TOKEN})  # sets the cookie
    return client


def test_a_request_without_the_token_is_refused(client: TestClient) -> None:
    for path in ["/", "/approvals", "/search", "/events", "/static/app.js", "/run/x"]:
        response = client.get(path)
        assert response.status_code == 403, path
        assert "a token is required" in response.text
    assert client.get("/", params={"token": "wrong"}).status_code == 403
    assert client.get("/", headers={"authorization": "token wrong"}).status_code == 403


def test_the_token_in_the_url_lets_in_and_becomes_a_cookie(client: TestClient) -> None:
    first = client.get("/", params={"token": TOKEN})
    assert first.status_code == 200
    assert "Supervision forest" in first.text
    cookie = first.headers["set-cookie"]
    assert cookie.startswith(f"promissory_token={TOKEN};")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    # Later requests carry the cookie, not the token.
    assert client.get("/approvals").status_code == 200
    fresh = TestClient(client.app, base_url="http://127.0.0.1:8765")
    assert fresh.get("/", headers={"authorization": f"token {TOKEN}"}).status_code == 200


def test_every_answer_forbids_scripts_from_elsewhere_framing_and_referrers(
    client: TestClient,
) -> None:
    for response in (client.get("/"), authed(client).get("/")):
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "same-origin"
        assert response.headers["x-content-type-options"] == "nosniff"


def test_a_host_that_is_not_loopback_is_refused(store: Store) -> None:
    app = create_app(store, token=None)
    with TestClient(app, base_url="http://evil.example:8765") as c:
        assert c.get("/").status_code == 403
    with TestClient(app, base_url="http://localhost:8765") as c:
        assert c.get("/").status_code == 200  # no token asked for, on loopback


def test_stored_values_are_shown_as_text(store: Store, client: TestClient) -> None:
    store.create("evil/1", param={"note": EVIL}, tags={"who": EVIL})
    store.resolve("evil/1", EVIL)
    authed(client)
    for path in ["/promise/evil/1", "/search?prefix=evil/", "/run/evil/1"]:
        text = client.get(path).text
        assert "<script>window.__pwned" not in text, path
        assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in text, path
        assert "<img src=x" not in text, path


def test_html_escapes_every_value_it_is_given() -> None:
    assert html("<p>{}</p>", EVIL) == (
        "<p>&lt;script&gt;window.__pwned = 1&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;</p>"
    )
    assert html('<a href="{}">', '" onclick="x') == '<a href="&quot; onclick=&quot;x">'


def csrf_of(text: str) -> str:
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', text)
    assert match, text
    return match.group(1)


def test_approve_settles_the_promise_as_promissory_resolve_does(
    store: Store, client: TestClient
) -> None:
    store.create("approvals/7", param={"amount": 250})
    page = authed(client).get("/approvals")
    assert "approvals/7" in page.text and "Approve" in page.text
    response = client.post(
        "/act/resolve",
        data={
            "csrf": csrf_of(page.text),
            "id": "approvals/7",
            "value": "true",
            "back": "/approvals",
        },
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert response.headers["location"].startswith("/approvals?note=approvals%2F7%3A+resolved")
    approved = store.get("approvals/7")
    assert approved.state.value == "resolved" and approved.value_as() is True
    # Again: left as it was, and said so.
    again = client.post(
        "/act/resolve",
        data={"csrf": csrf_of(page.text), "id": "approvals/7", "value": "false"},
        follow_redirects=True,
    )
    assert "approvals/7: already resolved, left as it was" in again.text
    assert store.get("approvals/7").value_as() is True


def test_reject_and_a_value_of_ones_own(store: Store, client: TestClient) -> None:
    store.create("approvals/8")
    store.create("approvals/9")
    csrf = csrf_of(authed(client).get("/approvals").text)
    client.post("/act/reject", data={"csrf": csrf, "id": "approvals/8", "error": "no"})
    client.post(
        "/act/resolve",
        data={"csrf": csrf, "id": "approvals/9", "value": '{"approved": true, "by": "ann"}'},
    )
    assert store.get("approvals/8").state.value == "rejected"
    assert store.get("approvals/9").value_as() == {"approved": True, "by": "ann"}
    bad = client.post("/act/resolve", data={"csrf": csrf, "id": "approvals/9", "value": "{"})
    assert "the value is not valid JSON" in bad.text


def test_an_action_without_the_csrf_value_or_from_elsewhere_is_refused(
    store: Store, client: TestClient
) -> None:
    store.create("approvals/10")
    csrf = csrf_of(authed(client).get("/approvals").text)
    assert client.post("/act/resolve", data={"id": "approvals/10"}).status_code == 403
    assert (
        client.post("/act/resolve", data={"id": "approvals/10", "csrf": "0" * 64}).status_code
        == 403
    )
    elsewhere = client.post(
        "/act/resolve",
        data={"id": "approvals/10", "csrf": csrf},
        headers={"origin": "http://evil.example"},
    )
    assert elsewhere.status_code == 403
    cross = client.post(
        "/act/resolve",
        data={"id": "approvals/10", "csrf": csrf},
        headers={"sec-fetch-site": "cross-site"},
    )
    assert cross.status_code == 403
    assert store.get("approvals/10").state.value == "pending"
    # An action is a POST: a GET changes nothing.
    assert (
        client.get("/act/resolve", params={"id": "approvals/10", "csrf": csrf}).status_code == 405
    )
    # A way back that leaves the view is not followed.
    out = client.post(
        "/act/resolve",
        data={"id": "approvals/10", "csrf": csrf, "back": "//evil.example/"},
        follow_redirects=False,
    )
    assert out.headers["location"].startswith("/?note=")


@tool
def lookup(topic: str) -> str:
    """Look a topic up.

    Args:
        topic: what to look up.
    """
    return f"notes on {topic}"


def test_a_run_page_shows_transcript_tool_arguments_usage_and_timeline(
    dsn: str, store: Store, client: TestClient
) -> None:
    agent = Agent(
        "ui-writer",
        "Write.",
        ScriptedModel([reply("", call("lookup", "c1", topic="actors")), "Actors keep state."]),
        tools=[lookup],
    )
    with Runtime(dsn) as rt:
        rt.run(agent, "Write about actors", id="ui/run/1", timeout=30)
    page = authed(client).get("/run/ui/run/1").text
    assert "Write about actors" in page
    assert "calls <b>lookup</b>" in page
    assert "&quot;topic&quot;: &quot;actors&quot;" in page  # the call's arguments
    assert "notes on actors" in page  # the tool's result
    assert "Actors keep state." in page
    assert page.count('<div class="wf-row d') == 4  # the run and its 3 steps
    assert "model calls" in page
    # The partial answer (for a live refresh) is the page's main part alone.
    partial = client.get("/run/ui/run/1", headers={"x-promissory-partial": "1"}).text
    assert partial.startswith("<h1>Run") and "<html" not in partial


def test_cancel_goes_through_a_confirmation_and_cancels_as_the_cli_does(
    store: Store, client: TestClient
) -> None:
    store.create("work/1")
    store.create("work/1/step")
    page = authed(client).get("/promise/work/1")
    assert "Cancel…" in page.text
    confirm = client.get(
        "/confirm", params={"action": "cancel", "id": "work/1", "back": "/promise/work/1"}
    )
    assert "Cancel work/1?" in confirm.text
    done = client.post(
        "/act/cancel",
        data={
            "csrf": csrf_of(confirm.text),
            "id": "work/1",
            "reason": "enough",
            "back": "/promise/work/1",
        },
    )
    assert "work/1: canceled" in done.text
    assert store.get("work/1").state.value == "rejected_canceled"
    assert store.get("work/1/step").state.value == "rejected_canceled"  # and all under it


def test_search_by_prefix_state_and_age(store: Store, client: TestClient) -> None:
    store.create("jobs/a")
    store.create("jobs/b")
    store.resolve("jobs/b", 1)
    store.create("other/c")
    authed(client)
    text = client.get("/search", params={"prefix": "jobs/", "state": "pending"}).text
    assert "/promise/jobs/a" in text and "/promise/jobs/b" not in text
    assert "/promise/other/c" not in text
    assert "/promise/jobs/b" in client.get("/search", params={"prefix": "jobs/", "age": "1h"}).text
    assert "age is a number and a unit" in client.get("/search", params={"age": "soon"}).text
    assert parse_age("15m") == timedelta(minutes=15)
    assert parse_age("2d") == timedelta(days=2)


def test_the_forest_shows_status_restarts_and_the_intensity_window(
    dsn: str, client: TestClient
) -> None:
    with Runtime(dsn) as rt:
        rt.run(
            Agent("ui-lone", "Say hi.", ScriptedModel(["hi"])),
            "hi",
            id="ui/run/forest",
            timeout=30,
        )
    text = authed(client).get("/").text
    assert "/run/ui/run/forest" in text
    assert '<span class="state s-stopped">stopped</span>' in text
    assert "0 of 1 in 5 s" in text
    assert "waiting" in client.get("/", params={"status": "waiting"}).text
    assert client.get("/", params={"status": "nonsense"}).status_code == 400


def test_live_events_follow_their_scope(store: Store) -> None:
    assert _touches("settled", "agent/run/1/3", "agent/run/1")
    assert _touches("message", "agent/run/1/t1-0-x\t42", "agent/run/1")
    assert not _touches("settled", "agent/run/10", "agent/run/1")

    async def main() -> list[str]:
        feed = LiveFeed(store)
        await feed.start()
        got: list[str] = []
        stream = feed.stream("jobs/1")
        try:
            got.append(await stream.__anext__())  # the greeting
            await asyncio.to_thread(store.create, "jobs/1")
            await asyncio.to_thread(store.resolve, "jobs/1", 1)
            got.append(await asyncio.wait_for(stream.__anext__(), 10))
        finally:
            await stream.aclose()
            await feed.close()
        return got

    greeting, change = asyncio.run(main())
    assert greeting.startswith("retry:")
    assert change == "event: change\ndata: {}\n\n"


@tool
def hold(ctx: Context) -> str:
    """Wait for a go from a person."""
    return "go" if ctx.promise().result(bool) else "stop"


def pending_under(store: Store, prefix: str) -> list[Any]:
    return store.search(prefix=prefix, kind="promise", state="pending").items


def test_resume_continues_a_canceled_run_hosted_by_the_view(dsn: str, store: Store) -> None:
    agent = Agent(
        "ui-resumable",
        "Wait for a go, then answer.",
        ScriptedModel([reply("", call("hold", "h1")), "answered"]),
        tools=[hold],
    )
    with Runtime(dsn) as rt:
        handle = rt.start(agent, "go", id="ui/run/resume")
        eventually(lambda: pending_under(store, "ui/run/resume/"))
        rt.cancel("ui/run/resume")
        with pytest.raises(PromiseCanceledError):
            handle.result(timeout=20)
    app = create_app(store, token=TOKEN, runtime=lambda: Runtime(dsn).open())
    with TestClient(app, base_url="http://127.0.0.1:8765") as c:
        page = authed(c).get("/run/ui/run/resume").text
        assert "Resume run…" in page
        confirm = c.get("/confirm", params={"action": "resume", "id": "ui/run/resume"})
        done = c.post(
            "/act/resume",
            data={"csrf": csrf_of(confirm.text), "id": "ui/run/resume", "back": "/"},
        )
        new = "ui/run/resume~resume1"
        assert done.url.path == f"/run/{new}"
        assert f"resumed as {new}" in done.text
        [waiting] = eventually(lambda: pending_under(store, new + "/"))
        store.resolve(waiting.id, True)
        assert store.wait(new, timeout=20).value_as()["output"] == "answered"


def test_cancel_of_an_actor_is_the_cli_s(dsn: str, store: Store, client: TestClient) -> None:
    from promissory import DurableActor, handler

    class Quiet(DurableActor[None]):
        @handler
        def hear(self, ctx: Context, text: str) -> str:
            return text

    with Runtime(dsn, actors=[Quiet]) as rt:
        rt.spawn(Quiet, id="ui/quiet")
        page = authed(client).get("/actor/ui/quiet").text
        assert "Cancel this actor…" in page
        confirm = client.get("/confirm", params={"action": "cancel", "id": "ui/quiet"})
        done = client.post("/act/cancel", data={"csrf": csrf_of(confirm.text), "id": "ui/quiet"})
        assert "ui/quiet: actor canceled, with 0 pending message(s); it ends" in done.text
        eventually(
            lambda: (
                store.read(
                    lambda conn: conn.execute(
                        "SELECT status FROM actors WHERE id = 'ui/quiet'"
                    ).fetchone()
                )
                == ("stopped",)
            )
        )
