"""When an agent's loop stops: conditions that compose with ``|`` and ``&``.

A condition is asked twice per turn: after the model answered (``phase == "model"``, before
any tool runs) and after the tools ran (``phase == "tools"``). Each is a pure function of a
``RunView``; the loop decides what the output is from the reason it stopped.

Example:
    >>> stop = NoToolCalls() | MaxTurns(20) | TokenBudget(50_000)
    >>> stop = ToolCalled("final_answer") | Predicate(lambda run: "DONE" in run.last_text)

"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import msgspec

from ..errors import InvalidInputError
from ._chat import Message, ModelResponse, Usage

__all__ = [
    "CostBudget",
    "MaxTurns",
    "NoToolCalls",
    "Predicate",
    "RunView",
    "StopCondition",
    "TokenBudget",
    "ToolCalled",
]

Phase = Literal["model", "tools"]


class RunView(msgspec.Struct, frozen=True, kw_only=True):
    """What a stop condition sees of a run."""

    phase: Phase
    turns: int
    usage: Usage
    messages: list[Message]
    last: ModelResponse

    @property
    def last_text(self) -> str:
        """The text of the model's last answer."""
        return self.last.message.text

    @property
    def called(self) -> list[str]:
        """The names of the tools the model called in its last answer."""
        return [c.name for c in self.last.message.tool_calls]


class StopCondition:
    """A reason to end the loop; combine with ``|`` (either) and ``&`` (both)."""

    def check(self, run: RunView) -> str | None:
        """The reason to stop now, or ``None`` to go on."""
        raise NotImplementedError

    def __or__(self, other: StopCondition) -> StopCondition:
        return _Any(self, other)

    def __and__(self, other: StopCondition) -> StopCondition:
        return _All(self, other)


class _Any(StopCondition):
    def __init__(self, *conditions: StopCondition) -> None:
        self.conditions = conditions

    def check(self, run: RunView) -> str | None:
        for c in self.conditions:
            reason = c.check(run)
            if reason is not None:
                return reason
        return None

    def __repr__(self) -> str:
        return " | ".join(map(repr, self.conditions))


class _All(StopCondition):
    def __init__(self, *conditions: StopCondition) -> None:
        self.conditions = conditions

    def check(self, run: RunView) -> str | None:
        reasons = [c.check(run) for c in self.conditions]
        if all(r is not None for r in reasons):
            return " & ".join(r for r in reasons if r)
        return None

    def __repr__(self) -> str:
        return " & ".join(map(repr, self.conditions))


class NoToolCalls(StopCondition):
    """The model answered without calling a tool (the default): its text is the answer."""

    def check(self, run: RunView) -> str | None:
        """Stop when the last answer calls no tool."""
        if run.phase == "model" and not run.last.message.tool_calls:
            return "final_answer"
        return None

    def __repr__(self) -> str:
        return "NoToolCalls()"


class MaxTurns(StopCondition):
    """At most ``n`` model calls."""

    def __init__(self, n: int) -> None:
        if n < 1:
            raise InvalidInputError("MaxTurns needs at least one turn")
        self.n = n

    def check(self, run: RunView) -> str | None:
        """Stop once ``n`` turns were taken."""
        return "max_turns" if run.phase == "model" and run.turns >= self.n else None

    def __repr__(self) -> str:
        return f"MaxTurns({self.n})"


class TokenBudget(StopCondition):
    """Stop once the run's tokens (its sub-agents' included) reach ``tokens``."""

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens

    def check(self, run: RunView) -> str | None:
        """Stop once the budget is spent."""
        return "token_budget" if run.usage.total_tokens >= self.tokens else None

    def __repr__(self) -> str:
        return f"TokenBudget({self.tokens})"


class CostBudget(StopCondition):
    """Stop once the run's cost (where prices are known) reaches ``usd``."""

    def __init__(self, usd: float) -> None:
        self.usd = usd

    def check(self, run: RunView) -> str | None:
        """Stop once the budget is spent."""
        return "cost_budget" if (run.usage.cost or 0.0) >= self.usd else None

    def __repr__(self) -> str:
        return f"CostBudget({self.usd})"


class ToolCalled(StopCondition):
    """Stop after a turn in which the model called tool ``name``; its result is the output."""

    def __init__(self, name: str) -> None:
        self.name = name

    def check(self, run: RunView) -> str | None:
        """Stop once the tool has run."""
        return f"tool:{self.name}" if run.phase == "tools" and self.name in run.called else None

    def __repr__(self) -> str:
        return f"ToolCalled({self.name!r})"


class Predicate(StopCondition):
    """Stop when ``fn(run)`` is true (checked in both phases)."""

    def __init__(self, fn: Callable[[RunView], bool], name: str = "predicate") -> None:
        self.fn = fn
        self.name = name

    def check(self, run: RunView) -> str | None:
        """Stop when the function says so."""
        return self.name if self.fn(run) else None

    def __repr__(self) -> str:
        return f"Predicate({self.name!r})"
