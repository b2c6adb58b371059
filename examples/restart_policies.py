"""Restart policies side by side: permanent, transient and temporary children, with backoff.

A supervisor starts three workers that each fail on their first job:

* ``steady`` (permanent) is restarted after any exit, even a normal one;
* ``careful`` (transient, with exponential backoff) is restarted after a crash, after a pause;
* ``oneshot`` (temporary) is never restarted: its caller gets the failure, and it is gone.

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
    handler,
)


class Tries(msgspec.Struct):
    count: int = 0


class Job(msgspec.Struct):
    name: str


class Worker(DurableActor[Tries]):
    """Calls a service that fails the first time; the failure crashes the worker."""

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


class Team(Supervisor):
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
    return outcomes


if __name__ == "__main__":
    main()
