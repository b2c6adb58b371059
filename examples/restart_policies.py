"""Restart policies side by side: permanent, transient and temporary children, with backoff.

First, a supervisor starts three workers that each fail on their first job:

* ``steady`` (permanent) is restarted after any exit (a crash here; a normal one too);
* ``careful`` (transient, with exponential backoff) is restarted after a crash, after a pause;
* ``oneshot`` (temporary) is never restarted: its caller gets the failure, and it is gone.

Then the same policies per sub-agent: a lead agent asks three researchers at once, each
attached with its own policy, and each researcher's model garbles its first answer (the
researcher crashes). The transient ones are restarted (one after a backoff) and answer; the
temporary one is not, and the lead gets its failure as the tool's error result.

    python examples/restart_policies.py
"""

from __future__ import annotations

import msgspec

from promissory import (
    Backoff,
    Context,
    DurableActor,
    Runtime,
    Supervisor,
    SupervisorRef,
    child,
    current_step,
    handler,
)
from promissory.agents import Agent, FunctionModel, ModelRequest, ModelResponse, call, reply
from promissory.errors import ModelError


class Tries(msgspec.Struct):
    count: int = 0


class Job(msgspec.Struct):
    name: str


class Worker(DurableActor[Tries], name="examples.restart_policies.Worker"):
    """Calls a service that fails the first time; the failure crashes the worker.

    Defined in a script, so it is given a stable name: another process (or this script run
    again) hosts its actors under that name.
    """

    @handler
    def job(self, ctx: Context, msg: Job) -> str:
        # The failed step is kept; a restarted worker tries that step again (a new attempt),
        # and a worker that is not restarted leaves its caller with the failure.
        answer = ctx.step(flaky_service, self.id)
        self.state = Tries(self.state.count + 1)
        return f"{msg.name}: {answer}"


_calls: dict[str, int] = {}


def flaky_service(caller: str) -> str:
    _calls[caller] = _calls.get(caller, 0) + 1
    if _calls[caller] == 1:
        raise ConnectionError(f"the service dropped {caller}'s first call")
    return f"served {caller} on call {_calls[caller]}"


class Team(Supervisor, name="examples.restart_policies.Team"):
    intensity = 5
    period = 10.0

    def children(self):  # type: ignore[no-untyped-def]
        return [
            child(Worker, id="steady", restart="permanent"),
            child(
                Worker,
                id="careful",
                restart="transient",
                backoff=Backoff(min=0.2, max=2.0, jitter=0.1),
            ),
            child(Worker, id="oneshot", restart="temporary"),
        ]


# -- the same policies, per sub-agent -------------------------------------------------------------


class GarblesFirstAnswer:
    """A researcher's model whose first answer comes back garbled (its agent crashes); the
    restarted agent tries that model step again, as a new attempt (``…~1``), and gets through."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def complete(self, request: ModelRequest) -> ModelResponse:
        step = current_step()
        if step is not None and "~" not in step.id:
            text = f"{self.name}: the answer came back garbled"
            raise ModelError(text, "malformed_output", retryable=False)
        return reply(f"{self.name} found it")


def lead_answers(request: ModelRequest) -> ModelResponse | str:
    """Ask the three researchers at once, then list what came back."""
    results = [r for m in request.messages for r in m.tool_results]
    if not results:
        return reply("", *(call(name, f"ask-{name}", input="look it up") for name in POLICIES))
    return "\n".join(
        f"{r.name}: {'failed: ' if r.is_error else ''}{r.content}"
        for r in sorted(results, key=lambda r: r.name)
    )


POLICIES = {
    "quick": {"restart": "transient"},
    "patient": {"restart": "transient", "backoff": Backoff(min=0.2, max=2.0, jitter=0.1)},
    "once": {"restart": "temporary"},
}


def lead_agent() -> Agent:
    researchers = [
        Agent(name, "Research.", GarblesFirstAnswer(name)).as_tool(**policy)  # type: ignore[arg-type]
        for name, policy in POLICIES.items()
    ]
    return Agent("policies-lead", "Ask, then list.", FunctionModel(lead_answers), tools=researchers)


def main() -> dict[str, str]:
    outcomes: dict[str, str] = {}
    with Runtime() as rt:
        team = SupervisorRef(rt.spawn(Team, id="examples-team"))
        team.which_children()  # waits until the team has started its children
        for name in ("steady", "careful", "oneshot"):
            reply = rt.ref(f"examples-team/{name}").ask(Job(name=f"job-{name}"))
            try:
                outcomes[name] = reply.get(timeout=30)
            except Exception as exc:  # the temporary child is not restarted
                outcomes[name] = f"failed: {exc}"
        for info in team.which_children():
            print(f"{info.id:8} {info.restart.value:9} {info.status:10} restarts={info.restarts}")
        for name, outcome in outcomes.items():
            print(f"{name}: {outcome}")
        # Per sub-agent: one run of the lead; its answer lists what each researcher gave.
        answer: str = rt.start(lead_agent(), "Find out.", id="examples-policies").result(60)
        print(answer)
        outcomes["lead"] = answer
    return outcomes


if __name__ == "__main__":
    main()
