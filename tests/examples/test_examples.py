"""Every example in ``examples/`` runs to completion, as a user runs it: ``python
examples/NAME.py`` in a subprocess, with ``$PROMISSORY_DSN`` set to the test's schema (so no
embedded server is started)."""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.cli.kit import Procs, child_env, eventually, promissory_args, run, sql
from tests.kit import time_passes

from .conftest import EXAMPLES, Example, script


def state_of(dsn: str, id: str) -> str | None:
    rows = sql(dsn, "SELECT state FROM promises WHERE id = %s", id)
    return str(rows[0][0]) if rows else None


TESTED = {
    "research_team",
    "human_approval",
    "durable_timer",
    "restart_policies",
    "asyncio_service",
    "refund_agent",
}


def test_every_example_is_tested_here() -> None:
    """A new example gets a test below (``test_*.py`` files there are pytest's to run)."""
    scripts = {p.stem for p in EXAMPLES.glob("*.py") if not p.name.startswith("test_")}
    assert scripts == TESTED


# -- research team -------------------------------------------------------------------------------

RESEARCH_RUN = "examples/research-team"


def assert_findings(answer: str) -> None:
    lines = answer.splitlines()
    assert lines[0] == "Findings:"
    assert lines[1].startswith("- scout: ")
    assert "DBOS checkpoints" in lines[1]
    assert lines[2].startswith("- flaky: ")
    assert "Erlang/OTP supervisors" in lines[2]
    assert lines[3] == (
        "(Not covered: broken failed and was given up; the answer stands on the rest.)"
    )


def test_research_team(example: Example, dsn: str) -> None:
    done = example("research_team")

    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert_findings(done.stdout.strip())
    [(state, value)] = sql(dsn, "SELECT state, value FROM promises WHERE id = %s", RESEARCH_RUN)
    assert state == "resolved"
    assert value["output"] == done.stdout.strip()


def test_research_team_killed_then_run_again_gives_the_same_answer(
    example: Example, dsn: str, server_dsn: str, home: Path
) -> None:
    crashed = example("research_team", "--crash-after", "3")

    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert "promissory crash point step.kept #3" in crashed.stderr
    assert crashed.stdout == ""
    assert state_of(dsn, RESEARCH_RUN) == "pending"
    kept_before = sql(
        dsn, "SELECT count(*) FROM promises WHERE id LIKE %s AND state <> 'pending'", "examples/%"
    )[0][0]

    again = example("research_team")

    assert again.returncode == 0, again.stderr
    assert_findings(again.stdout.strip())
    assert state_of(dsn, RESEARCH_RUN) == "resolved"
    # The same answer as a run that was never killed, in a schema of its own.
    from promissory.testing import fresh_schema

    with fresh_schema(server_dsn) as other:
        clean = run(script("research_team"), child_env(other, home), 60)
        assert clean.returncode == 0, clean.stderr
        kept_clean = sql(other, "SELECT count(*) FROM promises WHERE id LIKE 'examples/%%'")[0][0]
    assert again.stdout == clean.stdout
    kept_after = sql(dsn, "SELECT count(*) FROM promises WHERE id LIKE 'examples/%%'")[0][0]
    assert kept_after == kept_clean  # nothing kept twice, nothing missing
    assert 3 <= kept_before < kept_after


# -- human approval ------------------------------------------------------------------------------

APPROVAL_RUN = "examples-approval"
APPROVAL = "approvals/examples-approval/250"


def test_human_approval_approves_itself(example: Example, dsn: str) -> None:
    done = example("human_approval", "--approve")

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"waiting for approval: promissory resolve {APPROVAL} --value true",
        f"{APPROVAL}: resolved",
        "Done: the transfer went out.",
    ]
    assert sql(dsn, "SELECT state, value FROM promises WHERE id = %s", APPROVAL) == [
        ("resolved", True)
    ]
    assert state_of(dsn, APPROVAL_RUN) == "resolved"


def test_human_approval_approved_with_promissory_resolve(
    procs: Procs, dsn: str, env: dict[str, str]
) -> None:
    clerk = procs.start(script("human_approval"))
    clerk.wait_for_line(r"^waiting for approval: promissory resolve ")
    eventually(lambda: state_of(dsn, APPROVAL) == "pending", what="the approval promise")
    assert clerk.popen.poll() is None

    approved = run(promissory_args(dsn, "resolve", APPROVAL, "--value", "true"), env)

    assert approved.returncode == 0, approved.stderr
    assert approved.stdout.strip() == f"{APPROVAL}: resolved"
    assert clerk.wait(30) == 0, clerk.stderr
    assert clerk.out[-1] == "Done: the transfer went out."
    assert state_of(dsn, APPROVAL_RUN) == "resolved"


def test_human_approval_across_a_restart(procs: Procs, dsn: str, env: dict[str, str]) -> None:
    """Killed while it waits, approved while nothing runs, started again: it goes on."""
    first = procs.start(script("human_approval"))
    first.wait_for_line(r"^waiting for approval")
    eventually(lambda: state_of(dsn, APPROVAL) == "pending", what="the approval promise")
    first.send(signal.SIGKILL)
    assert first.wait(10) == -signal.SIGKILL

    approved = run(promissory_args(dsn, "resolve", APPROVAL, "--value", "true"), env)
    assert approved.returncode == 0, approved.stderr

    second = procs.start(script("human_approval"))
    assert second.wait(30) == 0, second.stderr
    assert second.out[-1] == "Done: the transfer went out."
    # The money was sent once, by the second process.
    sends = sql(
        dsn,
        "SELECT id, state FROM promises WHERE id LIKE %s AND fingerprint LIKE %s",
        APPROVAL_RUN + "/%",
        "%send_money%",
    )
    assert [state for _, state in sends] == ["resolved"]


# -- durable timer -------------------------------------------------------------------------------

TIMER_RUN = "examples-timer"


def test_durable_timer(example: Example, dsn: str) -> None:
    began = time.monotonic()
    done = example("durable_timer", "--seconds", "1")

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "waiting 1.0 s on a durable timer (stop me and start me again)...",
        "The price fell from 101 to 97.",
    ]
    assert time.monotonic() - began >= 1.0
    [(kind, state)] = sql(
        dsn,
        "SELECT kind, state FROM promises WHERE id LIKE %s AND kind = 'timer'",
        TIMER_RUN + "/%",
    )
    assert state == "resolved"
    assert state_of(dsn, TIMER_RUN) == "resolved"


def test_durable_timer_fires_after_a_restart(procs: Procs, dsn: str) -> None:
    first = procs.start(script("durable_timer", "--seconds", "1.5"))
    first.wait_for_line(r"^waiting 1.5 s on a durable timer")
    eventually(
        lambda: sql(dsn, "SELECT 1 FROM promises WHERE kind = 'timer' AND state = 'pending'"),
        what="the timer",
    )
    first.send(signal.SIGKILL)
    assert first.wait(10) == -signal.SIGKILL
    time_passes(dsn, 1.5)  # the timer comes due while nothing runs

    second = procs.start(script("durable_timer", "--seconds", "1.5"))

    assert second.wait(30) == 0, second.stderr
    assert second.out[-1] == "The price fell from 101 to 97."
    assert len(sql(dsn, "SELECT 1 FROM promises WHERE kind = 'timer'")) == 1


# -- restart policies ----------------------------------------------------------------------------


def test_restart_policies(example: Example, dsn: str) -> None:
    done = example("restart_policies")

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    children = {line.split()[0]: line.split()[1:] for line in lines if "restarts=" in line}
    assert children == {
        "steady": ["permanent", "running", "restarts=1"],
        "careful": ["transient", "running", "restarts=1"],
    }
    outcomes = dict(line.split(": ", 1) for line in lines if "restarts=" not in line)
    assert outcomes == {
        "steady": "job-steady: served examples-team/steady on call 2",
        "careful": "job-careful: served examples-team/careful on call 2",
        "oneshot": "failed: the service dropped examples-team/oneshot's first call",
        # Per sub-agent: the transient researchers were restarted and answered; the
        # temporary one was not, and the lead got its failure.
        "once": "failed: the once agent failed: once: the answer came back garbled",
        "patient": "patient found it",
        "quick": "quick found it",
    }
    rows = sql(
        dsn,
        "SELECT regexp_replace(id, '.*-', ''), spec->>'restart', status, restarts, "
        "coalesce(spec->'backoff' <> 'null'::jsonb, false) FROM actors "
        "WHERE parent = 'examples-policies'",
    )
    assert {name: tuple(rest) for name, *rest in rows} == {
        "quick": ("transient", "stopped", 1, False),
        "patient": ("transient", "stopped", 1, True),
        "once": ("temporary", "failed", 0, False),
    }
    statuses = dict(sql(dsn, "SELECT id, status FROM actors WHERE id LIKE 'examples-team/%%'"))
    assert statuses.get("examples-team/oneshot") in (None, "failed", "stopped")


# -- refund agent --------------------------------------------------------------------------------


def test_refund_agent(example: Example, dsn: str) -> None:
    done = example("refund_agent")
    again = example("refund_agent")  # the run is found finished: the same answer, nothing redone

    assert done.returncode == 0, done.stderr
    assert done.stdout == "Refunded 42 for order 17.\n"
    assert again.returncode == 0, again.stderr
    assert again.stdout == done.stdout
    [(state,)] = sql(dsn, "SELECT state FROM promises WHERE id = 'refunds/order-17'")
    assert state == "resolved"
    refunds = sql(
        dsn,
        "SELECT state FROM promises WHERE id LIKE %s AND fingerprint LIKE %s",
        "refunds/order-17/%",
        "step:tool:refund:%",
    )
    assert refunds == [("resolved",)]


# -- asyncio service -----------------------------------------------------------------------------


def http(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def start_service(procs: Procs) -> tuple[Any, str]:
    service = procs.start(script("asyncio_service", "--port", "0"))
    base = service.wait_for_line(r"^serving on (http://127\.0\.0\.1:\d+)$").group(1)
    return service, base


def test_asyncio_service_runs_an_agent_per_request_and_closes_the_runtime_on_sigint(
    procs: Procs, dsn: str
) -> None:
    service, base = start_service(procs)
    assert len(sql(dsn, "SELECT id FROM nodes WHERE ended_at IS NULL")) == 1  # open

    status, started = http("POST", f"{base}/runs", {"task": "summarise the news of the day"})
    assert status == 202
    run_id = started["id"]
    assert run_id.startswith("service/")

    def finished() -> Any:
        code, answer = http("GET", f"{base}/runs/{run_id}")
        assert code == 200
        return answer if answer["state"] != "pending" else None

    assert eventually(finished, what="the run's result") == {
        "id": run_id,
        "state": "resolved",
        "result": "Summary: summarise the news of the day",
    }
    assert http("GET", f"{base}/runs/service/nothing") == (
        404,
        {"error": "no run service/nothing"},
    )
    assert http("GET", f"{base}/elsewhere")[0] == 404

    service.send(signal.SIGINT)

    assert service.wait(20) == 0, service.stderr
    assert "Traceback" not in service.stderr
    # The runtime was closed: its node handed its lease back.
    assert sql(dsn, "SELECT id FROM nodes WHERE ended_at IS NULL") == []
    assert state_of(dsn, run_id) == "resolved"


def test_asyncio_service_serves_several_runs_at_once(procs: Procs, dsn: str) -> None:
    service, base = start_service(procs)
    ids = [http("POST", f"{base}/runs", {"task": f"task {i}"})[1]["id"] for i in range(5)]

    def all_done() -> bool:
        return all(http("GET", f"{base}/runs/{i}")[1]["state"] == "resolved" for i in ids)

    eventually(all_done, what="every run resolved")
    results = [http("GET", f"{base}/runs/{i}")[1]["result"] for i in ids]
    assert results == [f"Summary: task {i}" for i in range(5)]
    service.send(signal.SIGINT)
    assert service.wait(20) == 0, service.stderr
