"""A mixed workload for the crash suite: supervision, calls between actors, an agent run with a
sub-agent and a person's approval, all with fixed ids so a rerun resumes rather than repeats.

* ``mixed/team`` (one_for_one) supervises ``counter`` (state: a running total) and ``flaky``
  (its first incarnation crashes on its first job; the restart handles it again);
* ``mixed/caller`` calls both, one after the other, and adds what they answered;
* the agent ``mixed-lead`` asks its sub-agent ``mixed-helper`` (a tool call that runs as a
  supervised child) and a durable tool that waits for an approval, which the scenario gives.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import msgspec

from promissory import Context, DurableActor, Runtime, current_step, handler
from promissory.actors import ChildDef, ChildSpec, Strategy, Supervisor, child
from promissory.agents import Agent, FunctionModel, RunHandle, ScriptedModel, call, reply, tool
from promissory.testing import effect


class Add(msgspec.Struct):
    n: int


class Job(msgspec.Struct):
    key: str


class Both(msgspec.Struct):
    n: int


class Total(msgspec.Struct):
    total: int = 0


def record(key: str) -> str:
    step = current_step()
    assert step is not None
    effect("did", step.idempotency_key)
    return key


class Counter(DurableActor[Total]):
    @handler
    def add(self, ctx: Context, msg: Add) -> int:
        ctx.step(record, f"add {msg.n}", name="record")
        self.state = Total(self.state.total + msg.n)
        return self.state.total


class Flaky(DurableActor[None]):
    @handler
    def job(self, ctx: Context, msg: Job) -> str:
        done = ctx.step(record, msg.key, name="record")
        record_ = self._activation.record
        if record_ is not None and record_.restarts == 0:
            # Its first incarnation fails its first job, after the step; the restart (a kept
            # fact, unlike "this process ran the step") handles the job again, and answers.
            raise RuntimeError("flaky, once")
        return f"{done} done"


class Team(Supervisor):
    strategy = Strategy.ONE_FOR_ONE
    intensity, period = 5, 3600.0

    def children(self) -> Sequence[ChildDef]:
        return [child(Counter, id="counter"), child(Flaky, id="flaky")]


class Caller(DurableActor[None]):
    @handler
    def both(self, ctx: Context, msg: Both) -> list[Any]:
        total = ctx.call("mixed/team/counter", Add(msg.n), returns=int)
        job = ctx.call("mixed/team/flaky", Job(f"job {msg.n}"), returns=str)
        return [total, job]


@tool
def ask_person(ctx: Context, question: str) -> str:
    """Ask a person and wait for the answer.

    Args:
        question: what to ask.
    """
    answer = ctx.promise(id=f"approvals/{ctx.message_id}").result(str)
    return f"{question}: {answer}"


def _helper(request: Any) -> Any:
    return f"helped with {request.messages[0].text}"


helper = Agent("mixed-helper", "Help.", FunctionModel(_helper))
lead = Agent(
    "mixed-lead",
    "Delegate, ask, answer.",
    ScriptedModel(
        [
            reply("", call("mixed-helper", "h1", input="the plan")),
            reply("", call("ask_person", "p1", question="go?")),
            "all done",
        ]
    ),
    tools=[helper.as_tool(restart="transient"), ask_person],
)


def _approve_when_asked(rt: Runtime, approval: str, stop: threading.Event) -> None:
    assert rt.store is not None
    while not stop.is_set():
        found = rt.store.find(approval)
        if found is not None and not found.state.settled:
            rt.store.resolve(approval, "yes")
            return
        if found is not None:
            return
        stop.wait(0.02)


def mixed(rt: Runtime) -> Any:
    rt.spawn(Team, id="mixed/team", spec=ChildSpec(restart="permanent", intensity=5))
    assert rt.store is not None
    query = "SELECT count(*) FROM actors WHERE parent = 'mixed/team'"
    while rt.store.read(lambda conn: conn.execute(query).fetchone())[0] < 2:
        threading.Event().wait(0.01)  # the team makes its children
    caller = rt.spawn(Caller, id="mixed/caller")
    replies = [caller.ask(Both(n), id=f"mixed/caller/both-{n}") for n in (1, 2, 3)]
    assert rt.store is not None
    stop = threading.Event()
    approver = threading.Thread(
        target=_approve_when_asked, args=(rt, "approvals/mixed/run", stop), daemon=True
    )
    approver.start()
    if rt.store.find("mixed/run") is None:
        run = rt.start(lead, "do it", id="mixed/run")
    else:
        run = RunHandle("mixed/run", rt.store)
    try:
        answer = run.result(timeout=60)
    finally:
        stop.set()
    return {"calls": [r.get(timeout=60) for r in replies], "agent": answer}
