"""OpenTelemetry spans for messages, runs, steps, model and tool calls: nothing without the extra.

The runtime calls the hooks below at the points work happens. While tracing is off (the
default, and always without the ``otel`` extra) each hook is one test of a module global, and
no ``opentelemetry`` module is imported. Tracing turns on at ``Runtime.open`` when the process
configured OpenTelemetry the usual way (an SDK ``TracerProvider`` set as the global one, or
``OTEL_TRACES_EXPORTER`` in the environment), or with ``enable_tracing(provider)``.

The trace context of a message is kept with the message, in its tags (``promissory:otel:…``),
so every handling of it, in any process and after any crash, is a child of the span that sent
it: a run resumed by the recovery pass continues its trace. Steps a handling replays from its
journal are spans marked ``promissory.replayed`` (and shown with no duration), not new work.

Example:
    >>> from opentelemetry.sdk.trace import TracerProvider  # doctest: +SKIP
    >>> from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # doctest: +SKIP
    >>> provider = TracerProvider()  # doctest: +SKIP
    >>> provider.add_span_processor(SimpleSpanProcessor(exporter))  # doctest: +SKIP
    >>> promissory.enable_tracing(provider)  # doctest: +SKIP

"""

from __future__ import annotations

import atexit
import collections
import contextlib
import importlib.util
import logging
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

log = logging.getLogger("promissory.tracing")

__all__ = ["disable_tracing", "enable_tracing", "tracing_enabled"]

TAG_PREFIX = "promissory:otel:"
"""The tags that keep a message's trace context (``promissory:otel:traceparent``…)."""

REPLAYED = "promissory.replayed"
"""The attribute marking a span of work replayed from the journal, not done again."""


class _On:
    """What tracing needs while it is on: the tracer and the API's modules, imported once."""

    def __init__(self, provider: Any) -> None:
        from opentelemetry import context, propagate, trace

        from ._deferred_span import DeferredSpan
        from ._version import __version__

        self.deferred = DeferredSpan

        self.trace = trace
        self.context = context
        self.propagate = propagate
        self.tracer = provider.get_tracer("promissory", __version__)
        self.kinds = trace.SpanKind
        self.error = trace.Status(trace.StatusCode.ERROR)
        self.lock = threading.Lock()
        self.steps: dict[str, Any] = {}
        """The span of each step running now, by step id (for ``annotate_step``)."""
        self.handlings: dict[str, Any] = {}
        """The span of each message being handled now, by message id."""
        self.crashed: dict[str, Any] = {}
        """The context of the handling each actor last crashed in (its restart's parent)."""
        global _at_exit
        if not _at_exit:
            # Registered after the provider's own shutdown (atexit runs the last one first):
            # the spans handed over are ended before the provider flushes and closes.
            atexit.register(end_spans)
            _at_exit = True


_on: _On | None = None
_at_exit = False
_explicit = False
_NULL: contextlib.nullcontext[None] = contextlib.nullcontext()


def tracing_enabled() -> bool:
    """Whether promissory makes spans now.

    Example:
        >>> tracing_enabled()
        False

    """
    return _on is not None


def enable_tracing(provider: Any = None) -> None:
    """Make spans from now on, with ``provider`` (default: the global ``TracerProvider``).

    Needs the ``otel`` extra (``pip install 'promissory[otel]'``). Configuring the global
    provider the usual way, before the runtime opens, turns tracing on by itself; this is for
    a provider of your own (a test's in-memory exporter, say).

    Example:
        >>> enable_tracing(provider)  # doctest: +SKIP

    Raises:
        ImportError: the ``opentelemetry`` packages are not installed.

    """
    global _on, _explicit
    if provider is None:
        from opentelemetry import trace

        provider = trace.get_tracer_provider()
    _on = _On(provider)
    _explicit = True


def disable_tracing() -> None:
    """Make no spans from now on (spans already started still end).

    Example:
        >>> disable_tracing()

    """
    global _on, _explicit
    _on = None
    _explicit = False
    end_spans()


def configure_from_environment() -> None:
    """Turn tracing on if this process configured OpenTelemetry (called as a runtime opens).

    Tracing is on when the process set a global tracer provider (an SDK one), or when
    ``OTEL_TRACES_EXPORTER`` names an exporter (``console``, ``otlp``…): then an SDK provider
    is made from the ``OTEL_*`` variables and set as the global one. Otherwise (and always
    without the extra) nothing is imported.
    """
    global _on
    if _explicit or _on is not None:
        return
    if "opentelemetry.trace" not in sys.modules and not _exporter_names():
        return  # nobody configured OpenTelemetry in this process: import nothing
    if importlib.util.find_spec("opentelemetry") is None:
        return
    try:
        from opentelemetry import trace
    except ImportError:
        return
    provider = trace.get_tracer_provider()
    if type(provider).__name__ in ("ProxyTracerProvider", "NoOpTracerProvider"):
        provider = _provider_from_environment()
        if provider is None:
            return
        trace.set_tracer_provider(provider)
        provider = trace.get_tracer_provider()
    _on = _On(provider)
    log.info("promissory: OpenTelemetry tracing is on (%s)", type(provider).__name__)


def _exporter_names() -> list[str]:
    return [
        n.strip().lower()
        for n in os.environ.get("OTEL_TRACES_EXPORTER", "").split(",")
        if n.strip() and n.strip().lower() != "none"
    ]


def _provider_from_environment() -> Any:
    names = _exporter_names()
    if not names:
        return None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError:
        log.warning("promissory: OTEL_TRACES_EXPORTER is set but opentelemetry-sdk is missing")
        return None
    provider = TracerProvider(resource=Resource.create())
    for name in names:
        exporter: Any = None
        if name == "console":
            exporter = ConsoleSpanExporter()
        elif name == "otlp":
            exporter = _otlp_exporter()
        if exporter is None:
            log.warning("promissory: no span exporter %r here; its spans are dropped", name)
            continue
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def _otlp_exporter() -> Any:
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    module = (
        "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"
        if protocol == "grpc"
        else "opentelemetry.exporter.otlp.proto.http.trace_exporter"
    )
    try:
        return importlib.import_module(module).OTLPSpanExporter()
    except ImportError:
        return None


# -- context kept in tags ----------------------------------------------------------------------


def inject(tags: dict[str, str]) -> None:
    """Add the current trace context to a message's ``tags`` (nothing while tracing is off)."""
    on = _on
    if on is None:
        return
    carrier: dict[str, str] = {}
    on.propagate.inject(carrier)
    for key, value in carrier.items():
        tags[TAG_PREFIX + key] = value


def _extract(on: _On, tags: Mapping[str, str] | None) -> Any:
    if not tags:
        return None
    carrier = {k[len(TAG_PREFIX) :]: v for k, v in tags.items() if k.startswith(TAG_PREFIX)}
    return on.propagate.extract(carrier) if carrier else None


def current_context() -> Any:
    """The current trace context (``None`` while tracing is off), to parent work elsewhere."""
    on = _on
    return None if on is None else on.context.get_current()


@contextlib.contextmanager
def _current(on: _On, span: Any) -> Iterator[Any]:
    token = on.context.attach(on.trace.set_span_in_context(span))
    try:
        yield span
    finally:
        on.context.detach(token)


def continuing(tags: Mapping[str, str] | None) -> contextlib.AbstractContextManager[Any]:
    """Make the trace context kept in ``tags`` current: what starts inside continues it."""
    on = _on
    if on is None:
        return _NULL
    parent = _extract(on, tags)
    if parent is None:
        return _NULL
    return _attached(on, parent)


@contextlib.contextmanager
def _attached(on: _On, ctx: Any) -> Iterator[None]:
    token = on.context.attach(ctx)
    try:
        yield
    finally:
        on.context.detach(token)


# -- spans -------------------------------------------------------------------------------------


_SIGNALS = {"Suspend", "Canceled", "EndOfJournal", "FencedError"}
"""What ends a handling without it failing."""


def _end(on: _On, span: Any, exc: BaseException | None, *, later: bool = False) -> None:
    """End ``span`` as ``exc`` ended its work; ``later``: see ``end_spans`` (a step's)."""
    if exc is not None:
        kind = type(exc).__name__
        if kind == "Suspend":
            span.set_attribute("promissory.suspended", True)
            awaiting = list(getattr(exc, "awaiting", ()) or ())
            if awaiting:
                span.set_attribute("promissory.awaiting", [str(a) for a in awaiting])
        elif kind in ("Canceled", "EndOfJournal"):
            span.set_attribute("promissory.canceled", True)
        elif kind == "FencedError":
            span.set_attribute("promissory.fenced", True)
        else:
            span.record_exception(exc)
            span.set_status(on.trace.Status(on.trace.StatusCode.ERROR, f"{kind}: {exc}"[:300]))
    if later:
        _ending.append((span, time.time_ns()))
        return
    try:
        span.end()
    except Exception:  # a span processor's fault must not fail the work it traced
        log.exception("promissory: ending a span failed")


_ending: collections.deque[tuple[Any, int]] = collections.deque()
"""Step spans done and not ended yet, with the time each step ended (see ``end_spans``)."""
_ending_lock = threading.Lock()
"""Held while spans are taken from ``_ending`` and ended: a drain that returns left none
half-ended."""


def end_spans() -> None:
    """End the step spans whose steps are done (at the time each was done).

    Starting and ending a span costs the SDK more than a no-op step costs the runtime (the
    sampler, ids, attribute maps, a readable copy, the span processors), and a step is the
    runtime's hottest path. So a step's span is a ``DeferredSpan`` that the SDK starts only
    if something inside the step needs it, and the step hands it over when done: the store's
    writer calls this once the next commit is on its way to the database, while the database
    works, and the SDK starts (if not yet) and ends each span here, at its step's times. A
    handling calls it before ending its own span, so a message's spans are all ended with
    it. Without tracing, one test of an empty deque.
    """
    if not _ending:
        return
    with _ending_lock:
        while _ending:
            span, at = _ending.popleft()
            try:
                span.end(end_time=at)
            except Exception:  # a span processor's fault is not the commit's
                log.exception("promissory: ending a span failed")


def producer(
    actor_id: str, type_name: str, message_id: str
) -> contextlib.AbstractContextManager[Any]:
    """The span of sending a message from outside a handler (``ActorRef.tell``/``ask``)."""
    on = _on
    if on is None:
        return _NULL
    return _span(
        on,
        f"send {actor_id}",
        {
            "messaging.operation.type": "send",
            "messaging.destination.name": actor_id,
            "messaging.message.id": message_id,
            "promissory.actor.id": actor_id,
            "promissory.promise.id": message_id,
            "promissory.message.type": type_name,
        },
        kind=on.kinds.PRODUCER,
    )


def span(
    name: str, attributes: Mapping[str, Any] | None = None, *, tags: Mapping[str, str] | None = None
) -> contextlib.AbstractContextManager[Any]:
    """A span around a block, current inside it (a child of the context in ``tags``, if any).

    Yields the span (``None`` while tracing is off).
    """
    on = _on
    if on is None:
        return _NULL
    return _span(on, name, attributes or {}, parent=_extract(on, tags))


@contextlib.contextmanager
def _span(
    on: _On,
    name: str,
    attributes: Mapping[str, Any],
    *,
    kind: Any = None,
    parent: Any = None,
) -> Iterator[Any]:
    s = on.tracer.start_span(
        name,
        context=parent,
        kind=kind if kind is not None else on.kinds.INTERNAL,
        attributes=_clean(attributes),
        record_exception=False,
        set_status_on_exception=False,
    )
    token = on.context.attach(on.trace.set_span_in_context(s))
    exc: BaseException | None = None
    try:
        yield s
    except BaseException as e:
        exc = e
        raise
    finally:
        on.context.detach(token)
        _end(on, s, exc)


def start(name: str, attributes: Mapping[str, Any] | None = None) -> Any:
    """Start a span that a later ``finish`` ends (work that outlives a block); ``None`` if off."""
    on = _on
    if on is None:
        return None
    return on.tracer.start_span(
        name,
        attributes=_clean(attributes or {}),
        record_exception=False,
        set_status_on_exception=False,
    )


def finish(span: Any, exc: BaseException | None = None, **attributes: Any) -> None:
    """End a span ``start`` made (no-op for ``None``), with ``exc`` as its failure, if any."""
    on = _on
    if span is None or on is None or not span.is_recording():
        return
    for key, value in attributes.items():
        if value is not None:
            span.set_attribute(key, value)
    _end(on, span, exc)


def current(span: Any) -> contextlib.AbstractContextManager[Any]:
    """Make ``span`` (from ``start``) the current span inside a block."""
    on = _on
    if on is None or span is None:
        return _NULL
    return _current(on, span)


def handling(ctx: Any) -> contextlib.AbstractContextManager[Any]:
    """The span of one handling of a message (the ``Context`` of it), current while it runs.

    A child of the span that sent the message (its context is in the message's tags). The
    count of steps its journal held when it began is ``promissory.replayed_steps``.
    """
    on = _on
    if on is None:
        return _NULL
    return _handling(on, ctx)


@contextlib.contextmanager
def _handling(on: _On, ctx: Any) -> Iterator[Any]:
    message = ctx.message
    kept = len(ctx._journal)
    type_name = message.tags.get("promissory:type", "message")
    attributes = {
        "messaging.operation.type": "process",
        "messaging.destination.name": ctx.actor_id,
        "promissory.actor.id": ctx.actor_id,
        "promissory.promise.id": message.id,
        "promissory.message.type": type_name,
        "promissory.replayed_steps": kept,
    }
    if ctx._cancel.requested.is_set():
        attributes["promissory.cleanup"] = True
    s = on.tracer.start_span(
        f"process {type_name}",
        context=_extract(on, message.tags),
        kind=on.kinds.CONSUMER,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    )
    with on.lock:
        on.handlings[message.id] = s
    token = on.context.attach(on.trace.set_span_in_context(s))
    exc: BaseException | None = None
    try:
        yield s
    except BaseException as e:
        exc = e
        raise
    finally:
        on.context.detach(token)
        with on.lock:
            on.handlings.pop(message.id, None)
            if exc is not None and type(exc).__name__ not in _SIGNALS:
                if len(on.crashed) > 10_000:
                    on.crashed.clear()  # actors never restarted: forgetting costs a parent
                on.crashed[ctx.actor_id] = on.trace.set_span_in_context(s)
        end_spans()  # its steps' spans end before it does
        _end(on, s, exc)


def describe_handling(message_id: str, name: str, attributes: Mapping[str, Any]) -> None:
    """Rename the span of the handling of ``message_id`` and add ``attributes`` (agent runs)."""
    on = _on
    if on is None:
        return
    with on.lock:
        s = on.handlings.get(message_id)
    if s is not None:
        s.update_name(name)
        s.set_attributes(_clean(attributes))


def step(
    ctx: Any, sid: str, label: str, replayed: bool, parent: Any
) -> contextlib.AbstractContextManager[Any]:
    """The span of one step (``ctx.step``): replayed from its record, or run for real.

    A model step (label ``model:AGENT``) is a GenAI ``chat`` span, a tool step
    (``tool:NAME``) an ``execute_tool`` span, any other ``step LABEL``.
    """
    on = _on
    if on is None:
        return _NULL
    return _Step(on, sid, label, replayed, parent)


class _Step:
    """The span of one step, current while the step runs (a class, not a generator: it is
    entered once per step, and a step is the runtime's hottest path).

    The span is a ``DeferredSpan``: the SDK starts it only when something inside the step
    needs it, or off the step's path once the step is done (``end_spans``).
    """

    __slots__ = ("on", "sid", "span", "token")

    def __init__(self, on: _On, sid: str, label: str, replayed: bool, parent: Any) -> None:
        # Few attributes: each costs the SDK as much as a tenth of a span (the actor and the
        # message are on the handling span, the step's name is in the span's).
        name, attributes = _step_names(label)
        attributes["promissory.promise.id"] = sid
        attributes[REPLAYED] = replayed
        self.on = on
        self.sid = sid
        self.span = on.deferred(on.tracer, name, attributes, parent)
        self.token: Any = None

    def __enter__(self) -> Any:
        on = self.on
        on.steps[self.sid] = self.span  # a dict item assignment is atomic
        self.token = on.context.attach(on.trace.set_span_in_context(self.span))
        return self.span

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        on = self.on
        on.context.detach(self.token)
        on.steps.pop(self.sid, None)
        _end(on, self.span, exc, later=True)


def _step_names(label: str) -> tuple[str, dict[str, Any]]:
    kind, _, name = label.partition(":")
    if kind == "model" and name:
        return "chat", {"gen_ai.operation.name": "chat", "gen_ai.agent.name": name}
    if kind == "tool" and name:
        return f"execute_tool {name}", {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": name,
        }
    return f"step {label}", {}


def enter_step(sid: str) -> None:
    """Make the span of step ``sid`` current in the calling context (an async step's task)."""
    on = _on
    if on is None:
        return
    s = on.steps.get(sid)
    if s is not None:
        on.context.attach(on.trace.set_span_in_context(s))  # the task's context ends with it


def annotate_step(sid: str, name: str | None, attributes: Mapping[str, Any]) -> None:
    """Rename the span of the running step ``sid`` and add attributes (a model call's)."""
    on = _on
    if on is None:
        return
    s = on.steps.get(sid)
    if s is None:
        return
    if name:
        s.update_name(name)
    s.set_attributes(_clean(attributes))


def waiting(ctx: Any, promises: Iterable[Any]) -> contextlib.AbstractContextManager[Any]:
    """The span of a handler waiting on promises, unless all are settled already (a replay)."""
    on = _on
    if on is None:
        return _NULL
    pending = [p for p in promises if not p.done()]
    if not pending:
        return _NULL
    records = [p._record for p in pending]
    kinds = sorted({r.kind.value for r in records if r is not None}) or ["promise"]
    ids = [p.id for p in pending]
    attributes: dict[str, Any] = {
        "promissory.promise.id": ids[0],
        "promissory.awaiting": ids,
        "promissory.actor.id": ctx.actor_id,
    }
    due = [r.timeout_at for r in records if r is not None and r.timeout_at is not None]
    if due:
        attributes["promissory.wait.until"] = min(due).isoformat()
    return _span(on, f"wait {'/'.join(kinds)} {ids[0]}", attributes)


def restarted(store: Any, record: Any) -> None:
    """A short span saying an actor's next incarnation was recorded (a restart).

    A child of the handling the actor crashed in, when that was in this process; else of the
    supervisor's handling that decided it; else of the context kept with the promise of the
    actor's id, if there is one (an agent run's actor has its run's id).
    """
    on = _on
    if on is None:
        return
    delay = None
    if record.restart_at is not None:
        from datetime import UTC, datetime

        delay = max(0.0, (record.restart_at - datetime.now(UTC)).total_seconds())
    attributes = {
        "promissory.actor.id": record.id,
        "promissory.promise.id": record.id,
        "promissory.restarts": record.restarts,
        "promissory.restart.delay_s": delay,
    }
    with on.lock:
        parent = on.crashed.pop(record.id, None)
    if parent is None and not on.trace.get_current_span().is_recording():
        try:
            found = store.find(record.id)
        except Exception:  # tracing never fails the work it watches
            found = None
        parent = _extract(on, found.tags) if found is not None else None
    with _span(on, f"restart {record.id}", attributes, parent=parent):
        pass


def _clean(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attributes.items() if v is not None}
