"""Forking a run: a new run that reuses another's kept steps up to a point, then goes on
with a changed prompt, model or tools.

The fork's task names its source and the position it is cut at (``ForkPoint``); each time the
fork's handler runs, it reads the source's journal before that position (a reference, not a
copy) and rebuilds the transcript from it without calling anything; from the cut on, its
steps are its own, under its own id, so the source stays as it was. Sub-agent calls kept
before the cut are reused; those after it run anew, as children of the fork.

The changes are kept in the task: a prompt as text, a model and tools by name. A model or tool
given as an object is known by that name in the process that made the fork (a model string,
and the agent's own tools, are known everywhere); a node that does not know it fails the
fork's run saying so.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from ..errors import InvalidDefinitionError, InvalidInputError
from ..store import Store
from ._agent import Agent, AgentTool, ForkPoint, RunHandle, RunTask, registered, tool_items
from ._model import Model, model_from
from ._tools import Tool

if TYPE_CHECKING:
    from ..runtime import Runtime

__all__ = ["agent_for", "fork_position", "start_fork"]

_lock = threading.Lock()
_models: dict[str, Model] = {}
"""Models given to ``fork`` as objects in this process, by name."""
_tools: dict[str, Tool | AgentTool] = {}
"""Tools given to ``fork`` in this process, by name."""
_variants: dict[bytes, tuple[Agent, Agent]] = {}
"""Each fork's agent (its agent as defined then, the variant), by the fork's task."""


def start_fork(
    rt: Runtime,
    run_id: str,
    *,
    at_step: int | str,
    prompt: str | None = None,
    model: Model | str | None = None,
    tools: Sequence[Any] | None = None,
    id: str | None = None,
) -> RunHandle:
    """Start a fork of run ``run_id`` from its step ``at_step``; return the fork's handle.

    ``at_step`` is a step's position (1 for the first step) or its id (``{run_id}/3``); the
    steps before it are reused as kept, it and those after run anew with the changes. The
    fork's id is ``id`` (an existing one is joined, not started again) or the next free
    ``{run_id}~forkN``.

    Raises:
        PromiseNotFoundError: no run has the id ``run_id``.
        InvalidInputError: ``run_id`` is not an agent run, ``at_step`` is not one of its steps,
            or a change is not usable (nothing is started).

    """
    store = rt.store
    assert store is not None
    source = store.get(run_id)
    try:
        task = source.param_as(RunTask)
    except Exception:
        raise InvalidInputError(f"{run_id!r} is not an agent run; only agent runs fork") from None
    agent = registered(task.agent)
    position = fork_position(store, run_id, at_step)
    if prompt is not None and not isinstance(prompt, str):
        raise InvalidInputError(f"a fork's prompt is a string, not {type(prompt).__name__}")
    model_name = None
    if model is not None:
        chosen = model_from(model)
        model_name = chosen.name
        if not isinstance(model, str):
            with _lock:
                _models[model_name] = chosen
    tool_names = None
    if tools is not None:
        items = tool_items(agent.name, list(tools))
        tool_names = list(items)
        with _lock:
            _tools.update(items)
    point = ForkPoint(source=run_id, at=position, prompt=prompt, model=model_name, tools=tool_names)
    if id is None:
        n = 1
        while store.find(f"{run_id}~fork{n}") is not None:
            n += 1
        id = f"{run_id}~fork{n}"
    return agent.start(rt, task.input, id=id, fork=point)


def fork_position(store: Store, run_id: str, at_step: int | str) -> int:
    """The position ``at_step`` names among run ``run_id``'s kept steps.

    Raises:
        InvalidInputError: it names no kept step of the run.

    """
    positions = sorted(
        int(p.id[len(run_id) + 1 :].split("~")[0])
        for p in store.journal(run_id).records
        if p.id.startswith(run_id + "/") and p.id[len(run_id) + 1 :].split("~")[0].isdigit()
    )
    last = positions[-1] if positions else 0
    text = str(at_step)
    if isinstance(at_step, str) and at_step.startswith(run_id + "/"):
        text = at_step[len(run_id) + 1 :]
    if isinstance(at_step, bool) or not text.isdigit() or not 1 <= int(text) <= last:
        raise InvalidInputError(
            f"at_step must name a kept step of {run_id}: its position (1 to {last}) or its id "
            f"({run_id}/N), not {at_step!r}"
        )
    return int(text)


def agent_for(task: RunTask) -> Agent:
    """The agent a run's task runs: its agent, with a fork's changes when it is a fork.

    Raises:
        AgentNotFoundError: the agent is not defined in this process.
        InvalidDefinitionError: the fork's model or a tool is not known in this process.

    """
    agent = registered(task.agent)
    fork = task.fork
    if fork is None or (fork.prompt is None and fork.model is None and fork.tools is None):
        return agent
    key = msgspec.json.encode([task.agent, fork])
    with _lock:
        found = _variants.get(key)
    if found is not None and found[0] is agent:
        return found[1]
    variant = copy.copy(agent)
    if fork.prompt is not None:
        variant.instructions = fork.prompt
    if fork.model is not None and fork.model != agent.model.name:
        variant.model = _model(fork)
    if fork.tools is not None:
        variant.tools = {name: _tool(fork, agent, name) for name in fork.tools}
    with _lock:
        _variants[key] = (agent, variant)
    return variant


def _model(fork: ForkPoint) -> Model:
    assert fork.model is not None
    with _lock:
        known = _models.get(fork.model)
    if known is not None:
        return known
    if ":" in fork.model or fork.model.startswith(("http://", "https://")):
        return model_from(fork.model)
    raise InvalidDefinitionError(
        f"the fork of {fork.source} runs on the model {fork.model!r}, given as an object in "
        "the process that made the fork and not known in this one: fork with a model string "
        "(such as 'openai:gpt-4o-mini'), or run the fork where its model is defined"
    )


def _tool(fork: ForkPoint, agent: Agent, name: str) -> Tool | AgentTool:
    with _lock:
        known = _tools.get(name)
    found = known or agent.tools.get(name)
    if found is None:
        raise InvalidDefinitionError(
            f"the fork of {fork.source} has the tool {name!r}, given in the process that made "
            f"the fork and not known in this one (agent {agent.name}'s tools are: "
            f"{', '.join(agent.tools) or 'none'})"
        )
    return found
