"""A new run's first model call, begun while the run itself is being kept.

``rt.start`` keeps a run (its actor, its task, this node's claim) in one commit, and only then
does the run's handler ask the model: the model's first token came a whole commit later than
it could. A model that says so (``early_start = True``: both HTTP adapters) is asked the run's
first turn while that commit is on its way, if this node is to run the run: for a run whose id
``rt.start`` made up, as soon as its statement is sent (no run has that id); for an id of the
caller's, once the statement is answered and says the run is new (the database sends that
answer before the COMMIT's: ``Op.answered``). The request is the
one the loop would make (``Agent.request``), and what the model streams waits in memory. The
run's handler, which starts only once the run is kept, takes the call (``take``) and reads it
as its first model step's answer, as if it had made the call then: the step is kept as ever,
and its text reaches a stream only through that step, so nothing of a run that was not kept
is ever seen.

A run that exists already (a start that joins it) or that another node is to run makes no
early call. One that is not taken is cut: when the run's commit failed, when the run ends
before its handler comes for the call (it was canceled at once, say), or when the handler does
not come within ``EARLY_TTL`` seconds; that call was made for nothing. Durability is
untouched: the call's answer counts only once its step is kept, and a crash before that makes
the call again, as it would have anyway.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Protocol

from ..actors import step_id
from ..store import EventKind, Store, Subscription
from ._chat import ModelRequest, ModelResponse

if TYPE_CHECKING:
    from ._agent import Agent, RunTask


class _Timer(Protocol):
    def cancel(self) -> None: ...


class _Loop(Protocol):
    """The runtime's event loop thread, as this module uses it (``Runtime.loop``)."""

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None: ...

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> _Timer: ...


__all__ = ["EARLY_TTL", "EarlyCall", "early_start", "offer", "take"]

EARLY_TTL = 60.0
"""Seconds an early call waits for its run's handler before it is cut."""


def early_start(model: Any) -> bool:
    """Whether ``model`` is asked a new run's first turn while the run is being kept."""
    return getattr(model, "early_start", False) is True and hasattr(model, "stream")


class EarlyCall:
    """Run ``run``'s first model call, begun ahead of its step; read once, by that step."""

    def __init__(
        self, loop: _Loop, agent: Agent, run: str, task: RunTask, request: ModelRequest
    ) -> None:
        self.agent = agent
        self.run = run
        self.task = task
        self.request = request
        self.step = step_id(run, 1)
        """The id of the step that reads it: the run's first."""
        self._loop = loop
        self._items: collections.deque[str | ModelResponse] = collections.deque()
        self._error: BaseException | None = None
        self._finished = False
        self._wake = asyncio.Event()
        self._pull: asyncio.Task[None] | None = None
        self._lock = threading.Lock()
        self._begun = False
        self._read = False
        self._cut = False
        self._expiry: _Timer | None = None
        self._ended: Subscription | None = None
        """The run's settle, heard: a run that ended before its handler took the call (it
        was canceled first, say) cuts it then, not after ``EARLY_TTL``."""
        self._store = 0

    @property
    def begun(self) -> bool:
        """Whether the call was made (``begin``)."""
        return self._begun

    def begin(self) -> None:
        """Make the call, on the runtime's event loop (from any thread; once)."""
        with self._lock:
            if self._begun or self._cut:
                return
            self._begun = True
        try:
            self._loop.call_soon(self._start)
            self._expiry = self._loop.call_later(EARLY_TTL, self.cut)
        except RuntimeError:  # the runtime is closing (its loop is closed): the step asks
            with self._lock:
                self._cut = True
            withdraw(self)

    def _start(self) -> None:
        if not self._cut:
            self._pull = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            async for item in self.agent.model.stream(self.request):  # type: ignore[attr-defined]
                self._items.append(item)
                self._wake.set()
        except BaseException as exc:  # the step's attempt fails with it, as if made then
            self._error = exc
            if not isinstance(exc, Exception):
                raise
        finally:
            self._finished = True
            self._wake.set()

    def read(self, step: str) -> bool:
        """Claim the call for the one attempt of step ``step`` that reads it (``stream``):
        ``False`` if it was claimed or cut already, never made, or made for another step (a
        retry of the step calls the model anew).
        """
        with self._lock:
            if self._read or self._cut or not self._begun or step != self.step:
                return False
            self._read = True
        self._done_waiting()
        return True

    async def stream(self) -> AsyncIterator[str | ModelResponse]:
        """What the model sends, as ``model.stream(request)`` would yield it (on the loop,
        after ``read``). Stopped before the end (the step was canceled or timed out), the
        call is cut.
        """
        try:
            while True:
                while self._items:
                    yield self._items.popleft()
                if self._finished:
                    if self._error is not None:
                        raise self._error
                    return
                self._wake.clear()
                await self._wake.wait()
        finally:
            if not self._finished:
                self._cancel_pull()

    def cut(self) -> None:
        """Stop the call and forget it, unless a step reads it (from any thread)."""
        with self._lock:
            if self._cut or self._read:
                return
            self._cut = True
        withdraw(self)
        self._done_waiting()
        if self._begun:
            self._loop.call_soon(self._cancel_pull)

    def _done_waiting(self) -> None:
        """Nothing waits for the handler any more: its timer and the run's end let go."""
        if self._expiry is not None:
            self._expiry.cancel()
        ended, self._ended = self._ended, None
        if ended is not None:
            ended.cancel()

    def _cancel_pull(self) -> None:
        if self._pull is not None and not self._pull.done():
            self._pull.cancel()


_waiting: dict[tuple[int, str], EarlyCall] = {}
_waiting_lock = threading.Lock()


def offer(store: Store, call: EarlyCall) -> None:
    """Leave ``call`` for its run's handler on ``store``'s runtime to ``take``; a run that
    ends first (canceled before its handler came) cuts it.
    """
    with _waiting_lock:
        _waiting[(id(store), call.run)] = call
        call._store = id(store)

    def settled(kind: EventKind, key: str, resync: bool) -> None:
        if not resync:
            call.cut()

    call._ended = store.subscribe(EventKind.SETTLED, [call.run], settled)
    if call._cut or call._read:
        call._done_waiting()  # it was let go of meanwhile


def take(store: Store, run_id: str, agent: Agent, task: RunTask) -> EarlyCall | None:
    """The early call made for this run's first turn, if there is one for this very agent
    and task (a run of the same id started otherwise, say after its own was cut, finds none).
    """
    with _waiting_lock:
        call = _waiting.get((id(store), run_id))
        if call is None or call.agent is not agent or call.task != task:
            return None
        del _waiting[(id(store), run_id)]
    return call


def withdraw(call: EarlyCall) -> None:
    """Forget ``call`` (it is cut, or its run was not written)."""
    key = (call._store, call.run)
    with _waiting_lock:
        if _waiting.get(key) is call:
            del _waiting[key]
