"""A run's events, streamed: what is kept, replayed in order, then what happens, live.

The kept events come from the run's rows alone (``Store.timeline``): a run started or ended
(its own, or a sub-agent's, whose run is under its call), a model's whole answer (and the tool
calls it asks for), a tool's result. So a stream opened late, after a crash, or in another
process (no agent definition needed) replays them, each once, and then goes on: at every
announcement that a step was kept (and at least every second) it reads the rows again and
emits what it has not emitted yet. The text a model writes is announced as it comes (never
kept: the kept step is the whole answer) to this process's streams at once and to other
processes by NOTIFY, gathered for ``LINGER`` (10 ms) into fewer notifications. Each model
call's text carries a token of its own: text of a call that was cut off (a crash, a failed
attempt retried) is followed by ``TextDiscarded`` when the call is made again or its kept
answer differs.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import queue
import threading
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Generator, Iterator
from typing import Any

import msgspec

from ..actors import step_id
from ..store import EventKind, Promise, PromiseKind, PromiseState, Store, Subscription
from ._chat import ModelResponse, ToolCall

log = logging.getLogger("promissory.agents")

__all__ = [
    "ModelAnswered",
    "RunEnded",
    "RunStarted",
    "RunStream",
    "StreamEvent",
    "TextDelta",
    "TextDiscarded",
    "ToolFinished",
    "ToolStarted",
    "announcer_for",
]

_origins: weakref.WeakKeyDictionary[Store, str] = weakref.WeakKeyDictionary()
_origins_lock = threading.Lock()


def origin_of(store: Store) -> str:
    """Who announces on ``store`` here: a stream on this store object takes these
    announcements from memory, and drops their NOTIFY echo.
    """
    with _origins_lock:
        found = _origins.get(store)
        if found is None:
            found = _origins[store] = uuid.uuid4().hex[:12]
        return found


class RunStarted(msgspec.Struct, frozen=True, kw_only=True, tag="run_started"):
    """A run began: the one streamed, or a sub-agent's (its id is its call's step id)."""

    run: str
    agent: str
    input: Any


class TextDelta(msgspec.Struct, frozen=True, kw_only=True, tag="text_delta"):
    """Text a model is writing, as it arrives (not kept). ``offset`` is where it goes in the
    call's text: a stream that joined while the text was written sees its first piece at an
    offset above 0 (what came before is in ``ModelAnswered``, the whole answer).
    """

    run: str
    step: str
    text: str
    offset: int = 0


class TextDiscarded(msgspec.Struct, frozen=True, kw_only=True, tag="text_discarded"):
    """The text streamed so far for a model step is not its answer: the call was cut off (a
    crash, or an attempt that failed) and is made again.
    """

    run: str
    step: str
    text: str


class ModelAnswered(msgspec.Struct, frozen=True, kw_only=True, tag="model_answered"):
    """A model step was kept: the model's whole answer for one turn."""

    run: str
    step: str
    text: str
    tool_calls: list[ToolCall] = []


class ToolStarted(msgspec.Struct, frozen=True, kw_only=True, tag="tool_started"):
    """A tool call the model asked for (it starts now, or was started)."""

    run: str
    call_id: str
    name: str
    arguments: dict[str, Any]


class ToolFinished(msgspec.Struct, frozen=True, kw_only=True, tag="tool_finished"):
    """A function tool's step was kept: its result (``ok``) or its final error, as text."""

    run: str
    step: str
    name: str
    call_id: str | None
    ok: bool
    content: str


class RunEnded(msgspec.Struct, frozen=True, kw_only=True, tag="run_ended"):
    """A run ended: ``state`` is the promise's; ``output`` its answer when resolved, ``error``
    what failed otherwise. The streamed run's own is the stream's last event.
    """

    run: str
    state: str
    output: Any = None
    error: str | None = None


StreamEvent = (
    RunStarted | TextDelta | TextDiscarded | ModelAnswered | ToolStarted | ToolFinished | RunEnded
)
"""One event of a run's stream (tagged by ``type`` in JSON)."""


class _Live(msgspec.Struct, frozen=True):
    """An announcement: ``k`` is ``d`` (a delta: run, step, token, text), ``k`` (a step of
    run ``r`` was kept) or ``s`` (run ``r`` of agent ``s`` began, its input the JSON ``x``);
    ``o`` the announcing process.
    """

    k: str
    r: str
    o: str = ""
    s: str = ""
    t: str = ""
    x: str = ""
    n: int = 0


_encoder = msgspec.json.Encoder()
_decode_live = msgspec.json.Decoder(_Live).decode
LINGER = 0.01
"""Seconds the announcer gathers live events after the first before it sends their NOTIFYs.
This process's streams have each event at once; other processes' have it up to this much
later, in fewer NOTIFYs (a model streaming a chunk every few milliseconds wakes every
listening node's listener once per gathering, not once per chunk), and the round trip and
this process's own echo come after a run's first text, not while it is being given."""
REST_WAIT = 0.5
"""Seconds a stream waits for the rest of a call's text it has heard the start of, once it
has read the call's whole answer (see ``RunStream._deltas_before``)."""
FIRST_LOOK = 0.05
"""Seconds a stream that gave its run's start from the task it was handed (``started``) waits
for the first step's text before it reads the rows (a run further on, or over, has more)."""
_MAX_TEXT = 3000
"""Characters of text in one NOTIFY (its payload is at most 8000 bytes of UTF-8)."""


# -- announcing (the run's side) -------------------------------------------------------------


class Announcer:
    """Announces one store's live events: at once in this process, by NOTIFY to the others
    (on a thread of its own, gathered for ``LINGER`` seconds after the first, deltas of one
    call joined into one). It holds the store weakly and its thread ends once the store is
    closed or gone.
    """

    def __init__(self, store: Store) -> None:
        self._store = weakref.ref(store)
        self._origin = origin_of(store)
        self._queue: queue.SimpleQueue[_Live] = queue.SimpleQueue()
        self._failed = False
        self._lock = threading.Lock()
        self._writing: dict[str, tuple[_Live, list[str]]] = {}
        """Each run's model call under way: its first delta and its pieces so far."""
        self._thread = threading.Thread(target=self._run, name="promissory-announce", daemon=True)
        self._thread.start()

    def delta(self, run: str, step: str, token: str, text: str, offset: int) -> None:
        """Text a model wrote for ``step`` of ``run`` in the call ``token``, at ``offset``."""
        if not text:
            return
        item = _Live("d", run, "", step, token, text, offset)
        # Noted before it is published: a stream that subscribes meanwhile has it either way.
        with self._lock:
            so_far = self._writing.get(run)
            if so_far is not None and so_far[0].s == step and so_far[0].t == token:
                so_far[1].append(text)
            else:
                if so_far is None and len(self._writing) >= _WRITING_MAX:
                    del self._writing[next(iter(self._writing))]  # the oldest: a run that failed
                self._writing[run] = (item, [text])
        self._say(item)

    def kept(self, run: str) -> None:
        """A step of ``run`` was kept (streams read the rows again)."""
        with self._lock:
            self._writing.pop(run, None)
        self._say(_Live("k", run))

    def writing(self, run: str) -> list[_Live]:
        """The text of the model calls under way in ``run`` and its sub-agents, so far, one
        delta each: what a stream that subscribes now has missed of them.
        """
        under = run + "/"
        with self._lock:
            found = [w for r, w in self._writing.items() if r == run or r.startswith(under)]
            return [msgspec.structs.replace(first, x="".join(pieces)) for first, pieces in found]

    def started(self, run: str, agent: str, input: Any) -> None:
        """Run ``run`` of ``agent`` began (its task is kept): a stream of it gives its
        ``RunStarted`` from this, and its first text with no read of the rows first.
        """
        text = _encoder.encode(input).decode()
        # Too long for a NOTIFY: other processes' streams read the run's row instead.
        self._say(_Live("s", run, "", agent, "", text), notify=len(text) <= _MAX_TEXT)

    def _say(self, item: _Live, notify: bool = True) -> None:
        store = self._store()
        if store is None or store.closed:
            return
        store.publish([(EventKind.LIVE, _key(item))])
        if notify:
            self._queue.put(msgspec.structs.replace(item, o=self._origin))

    def _run(self) -> None:
        while True:
            try:
                batch = [self._queue.get(timeout=1.0)]
            except queue.Empty:
                store = self._store()
                if store is None or store.closed:
                    return
                del store
                continue
            until = time.monotonic() + LINGER
            while (left := until - time.monotonic()) > 0:
                try:
                    batch.append(self._queue.get(timeout=left))
                except queue.Empty:
                    break
            while True:  # and what came by the end
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            store = self._store()
            if store is None or store.closed:
                return
            keys = [_key(item) for item in _joined(batch)]
            try:
                store.announce(keys, local=[])
                self._failed = False
            except Exception as exc:  # live text is best effort: what is kept is not lost
                if not self._failed:
                    log.warning("promissory: announcing a run's live events failed: %s", exc)
                self._failed = True
            del store


def _key(item: _Live) -> str:
    return _encoder.encode(item).decode()


def _joined(batch: list[_Live]) -> list[_Live]:
    """Consecutive deltas of one call joined (up to ``_MAX_TEXT``); repeated pings dropped."""
    out: list[_Live] = []
    for item in batch:
        last = out[-1] if out else None
        if (
            last is not None
            and item.k == "d"
            and last.k == "d"
            and (last.s, last.t) == (item.s, item.t)
            and len(last.x) + len(item.x) <= _MAX_TEXT
        ):
            out[-1] = msgspec.structs.replace(last, x=last.x + item.x)
        elif item.k == "k" and any(o.k == "k" and o.r == item.r for o in out):
            continue
        else:
            while len(item.x) > _MAX_TEXT:
                out.append(msgspec.structs.replace(item, x=item.x[:_MAX_TEXT]))
                item = msgspec.structs.replace(item, x=item.x[_MAX_TEXT:], n=item.n + _MAX_TEXT)
            out.append(item)
    return out


_announcers: weakref.WeakKeyDictionary[Store, Announcer] = weakref.WeakKeyDictionary()
_announcers_lock = threading.Lock()
_WRITING_MAX = 10_000
"""Runs whose call under way an announcer remembers the text of (a run that failed mid-call
leaves its text until this many newer ones push it out)."""


def announcer_for(store: Store) -> Announcer:
    """The announcer of ``store`` (made on first use; its thread ends with the store)."""
    with _announcers_lock:
        found = _announcers.get(store)
        if found is None or not found._thread.is_alive():
            found = _announcers[store] = Announcer(store)
        return found


# -- reading (the stream's side) ------------------------------------------------------------


class _Partial(msgspec.Struct):
    token: str
    text: str
    start: int
    """The offset of the first piece seen (above 0: the stream joined after the call began)."""


class RunStream:
    """The events of run ``run_id`` (and its sub-agents'): the kept ones first, in order, then
    the live ones, each once, until the run ends (``RunEnded`` for it is the last). Iterate it
    (``for event in handle.stream()``) or iterate it asynchronously (``async for``).

    Args:
        store: the store the run is kept in (of any process).
        run_id: the run.
        poll: seconds between looks at the rows when nothing is announced (a safety net).
        started: the run's task as this process wrote it just now (``rt.start``'s handle
            passes it): the stream gives the run's start from it, and the text of the run's
            first step before any read of the rows (nothing else of the run comes before).

    Example:
        >>> for event in rt.start(writer, "A haiku").stream():  # doctest: +SKIP
        ...     if isinstance(event, TextDelta):
        ...         print(event.text, end="", flush=True)

    """

    def __init__(
        self, store: Store, run_id: str, *, poll: float = 1.0, started: Promise | None = None
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.poll = poll
        self._task = started
        """The run's task as this process wrote it just now (the handle ``rt.start`` gave)."""
        self._looked = False
        self._first = step_id(run_id, 1)
        self._events: queue.SimpleQueue[_Live | None] = queue.SimpleQueue()
        self._backlog: collections.deque[_Live | None] = collections.deque()
        """Items taken from ``_events`` ahead of their turn (see ``_deltas_before``)."""
        self._emitted: set[tuple[str, str]] = set()
        self._answered: set[str] = set()
        self._partial: dict[str, _Partial] = {}
        self._calls: dict[str, list[ToolCall]] = {}
        self._ended = False
        self._gen: weakref.ref[Generator[StreamEvent, None, None]] | None = None

    def __iter__(self) -> Iterator[StreamEvent]:
        # Held weakly: the generator's frame holds this stream, and a reader that drops it (a
        # ``break``) must end it at once, its subscriptions with it, not at the next GC.
        gen = self._gen() if self._gen is not None else None
        if gen is None:
            gen = self._stream()
            self._gen = weakref.ref(gen)
        return gen

    def close(self) -> None:
        """Stop listening (a stream read to its end, or dropped, stops by itself)."""
        gen = self._gen() if self._gen is not None else None
        if gen is not None:
            gen.close()

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        return self._astream()

    async def _astream(self) -> AsyncIterator[StreamEvent]:
        # The blocking iterator on a worker thread, one event at a time: the loop never waits.
        events = iter(self)
        loop = asyncio.get_running_loop()
        end = object()
        while True:
            event = await loop.run_in_executor(None, next, events, end)
            if event is end:
                return
            yield event  # type: ignore[misc]

    def _stream(self) -> Generator[StreamEvent, None, None]:
        subs = self._subscribe()
        try:
            started = self._task
            if started is not None and _fresh(started):
                # A new run, written by this process just now: its start is known, and nothing
                # of it is kept before its first step, whose text needs no read of the rows
                # (the first look waits for anything else: see ``_delta``).
                self._emitted.add((started.id, "start"))
                yield from self._event(started, "start")
            else:
                yield from self._look()
            while not self._ended:
                try:
                    # Not looked yet: soon, unless the first step's text comes first.
                    wait = self.poll if self._looked else min(self.poll, FIRST_LOOK)
                    item = (
                        self._backlog.popleft() if self._backlog else self._events.get(timeout=wait)
                    )
                except queue.Empty:
                    item = None
                if item is not None and item.k == "d":
                    yield from self._delta(item)
                elif item is not None and item.k == "s":
                    # A sub-agent's start is read with the rows, when its first event comes.
                    if item.r == self.run_id:
                        yield from self._started(item)
                else:
                    yield from self._look()
        finally:
            for sub in subs:
                sub.cancel()

    def _subscribe(self) -> list[Subscription]:
        own, under = self.run_id, self.run_id + "/"
        mine = origin_of(self.store)
        # The callbacks hold the queue, not the stream: a stream its reader drops (a ``break``
        # out of the loop) is collected, and its generator's end cancels them.
        events = self._events

        def live(kind: EventKind, key: str, resync: bool) -> None:
            if resync:
                events.put(None)
                return
            try:
                item = _decode_live(key)
            except msgspec.DecodeError:
                return
            if item.o == mine:
                return  # announced on this store object: taken from memory already
            if item.r == own or item.r.startswith(under):
                events.put(item)

        def settled(kind: EventKind, key: str, resync: bool) -> None:
            events.put(None)

        subs = [
            self.store.subscribe(EventKind.LIVE, [""], live),
            self.store.subscribe(EventKind.SETTLED, [own], settled),
        ]
        # Text of a call under way in this process, written before this stream listened (a
        # stream opened on the handle ``rt.start`` returns may come after the first piece).
        with _announcers_lock:
            announcer = _announcers.get(self.store)
        if announcer is not None:
            self._backlog.extend(announcer.writing(own))
        return subs

    def _started(self, item: _Live) -> Iterator[StreamEvent]:
        """The streamed run's own start, as announced: it is always its first event."""
        if (item.r, "start") in self._emitted:
            return
        self._emitted.add((item.r, "start"))
        yield RunStarted(run=item.r, agent=item.s, input=msgspec.json.decode(item.x))

    def _delta(self, item: _Live) -> Iterator[StreamEvent]:
        if not self._looked and not (item.r == self.run_id and item.s == self._first):
            yield from self._look()  # kept events may come before it
        if (item.r, "start") not in self._emitted:
            # A sub-agent's text: its start comes first. The look may find this text's step
            # kept already: the text is given before that answer (``_deltas_before``), so it
            # waits in the backlog meanwhile, and is given here only if the look did not.
            self._backlog.appendleft(item)
            yield from self._look()
            if not any(waiting is item for waiting in self._backlog):
                return
            self._backlog = collections.deque(w for w in self._backlog if w is not item)
        if item.s in self._answered:
            return  # its whole answer was emitted already
        yield from self._text(item)

    def _text(self, item: _Live) -> Iterator[StreamEvent]:
        partial = self._partial.get(item.s)
        if partial is not None and partial.token != item.t:
            yield TextDiscarded(run=item.r, step=item.s, text=partial.text)
            partial = None
        if partial is None:
            partial = self._partial[item.s] = _Partial(item.t, "", item.n)
        else:
            # Heard twice (the text so far, then a piece of it, live): given once.
            end = partial.start + len(partial.text)
            if item.n < end:
                if item.n + len(item.x) <= end:
                    return
                item = msgspec.structs.replace(item, x=item.x[end - item.n :], n=end)
        partial.text += item.x
        yield TextDelta(run=item.r, step=item.s, text=item.x, offset=item.n)

    def _deltas_before(self, step: str, text: str) -> Iterator[StreamEvent]:
        """The deltas of ``step`` heard but not given yet, given now, before its whole answer
        ``text`` (a reader slower than the model would otherwise see the answer first and lose
        them). When the text given so far is the start of the answer, the rest is on its way
        (another process's announcer gathers deltas for ``LINGER``, and the answer's commit
        can be heard first): it is waited for, at most ``REST_WAIT`` seconds.
        """
        deadline = None
        while True:
            while True:
                try:
                    self._backlog.append(self._events.get_nowait())
                except queue.Empty:
                    break
            kept: collections.deque[_Live | None] = collections.deque()
            for item in self._backlog:
                if item is not None and item.k == "d" and item.s == step:
                    yield from self._text(item)
                else:
                    kept.append(item)
            self._backlog = kept
            partial = self._partial.get(step)
            if partial is None:
                return
            rest = text[partial.start :]
            if rest == partial.text or not rest.startswith(partial.text):
                return
            deadline = deadline or time.monotonic() + REST_WAIT
            left = deadline - time.monotonic()
            if left <= 0:
                return  # the rest did not come: the answer says what the text was
            try:
                self._backlog.append(self._events.get(timeout=left))
            except queue.Empty:
                return

    def _look(self) -> Iterator[StreamEvent]:
        """Emit what the rows hold that was not emitted yet, in the order it happened."""
        self._looked = True
        rows = self.store.timeline(self.run_id)
        found: list[tuple[Any, int, int, Promise, str]] = []
        for p in rows:
            if p.kind is PromiseKind.MESSAGE and p.recipient is not None and _is_run(p):
                found.append((p.created_at, p.seq, 0, p, "start"))
                if p.state.settled:
                    found.append((p.settled_at, p.seq, 1, p, "end"))
            elif p.kind is PromiseKind.STEP and p.state.settled and p.fingerprint:
                if p.fingerprint.startswith(("step:model:", "step:tool:")):
                    found.append((p.settled_at, p.seq, 1, p, "step"))
        found.sort(key=lambda f: (f[0], f[1], f[2]))
        for _, _, _, p, phase in found:
            if (p.id, phase) in self._emitted:
                continue
            self._emitted.add((p.id, phase))
            yield from self._event(p, phase)

    def _event(self, p: Promise, phase: str) -> Iterator[StreamEvent]:
        run = p.id.rsplit("/", 1)[0]
        if phase == "start":
            task = p.param_as(dict) if p.param is not None else {}
            yield RunStarted(run=p.id, agent=str(task.get("agent", "")), input=task.get("input"))
        elif phase == "end":
            if p.id == self.run_id:
                self._ended = True
            if p.state is PromiseState.RESOLVED:
                value = p.value_as(dict) if p.value is not None else {}
                yield RunEnded(run=p.id, state=p.state.value, output=value.get("output"))
            else:
                info = p.error()
                yield RunEnded(run=p.id, state=p.state.value, error=info.message if info else None)
        elif p.fingerprint is not None and p.fingerprint.startswith("step:model:"):
            if p.state is not PromiseState.RESOLVED:
                return
            answer = p.value_as(ModelResponse)
            text = answer.message.text
            yield from self._deltas_before(p.id, text)
            self._answered.add(p.id)
            partial = self._partial.pop(p.id, None)
            if partial is not None and text[partial.start :] != partial.text:
                yield TextDiscarded(run=run, step=p.id, text=partial.text)
            calls = answer.message.tool_calls
            self._calls[run] = list(calls)
            yield ModelAnswered(run=run, step=p.id, text=text, tool_calls=calls)
            for c in calls:
                yield ToolStarted(run=run, call_id=c.id, name=c.name, arguments=c.arguments)
        elif p.fingerprint is not None:
            name = p.fingerprint.split(":")[2]
            pending = self._calls.get(run, [])
            call = next((c for c in pending if c.name == name), None)
            if call is not None:
                pending.remove(call)
            if p.state is PromiseState.RESOLVED:
                content = bytes(p.value).decode() if p.value is not None else "null"
                yield ToolFinished(
                    run=run,
                    step=p.id,
                    name=name,
                    call_id=call.id if call else None,
                    ok=True,
                    content=_text(content),
                )
            else:
                info = p.error()
                yield ToolFinished(
                    run=run,
                    step=p.id,
                    name=name,
                    call_id=call.id if call else None,
                    ok=False,
                    content=f"{info.type.rsplit('.', 1)[-1]}: {info.message}" if info else "",
                )


def _fresh(message: Promise) -> bool:
    """Whether a run's task starts it afresh: not a resumed run, nor a fork (which begin with
    kept steps of another run).
    """
    try:
        task = message.param_as(dict)
    except Exception:
        return False
    return isinstance(task, dict) and "resume" not in task and "fork" not in task


def _is_run(message: Promise) -> bool:
    """Whether a message is an agent run's task (``RunTask``: it names its agent)."""
    try:
        task = message.param_as(dict)
    except Exception:
        return False
    return isinstance(task, dict) and isinstance(task.get("agent"), str) and "input" in task


def _text(json_text: str) -> str:
    """A tool's kept value as the model was told it: a string as it is, other JSON as JSON."""
    try:
        value = msgspec.json.decode(json_text)
    except msgspec.DecodeError:
        return json_text
    return value if isinstance(value, str) else json_text
