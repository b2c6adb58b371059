"""A step's span, started in the SDK only when something needs it or once the step is done.

Imported by ``_tracing`` only while tracing is on (it needs ``opentelemetry``).

Starting a span costs the SDK more than a no-op step costs the runtime's Python (the sampler,
two ids, a bounded attribute map, the processors' ``on_start``: 20–50 µs), and a step is the
runtime's hottest path. A ``DeferredSpan`` notes its name, attributes, parent and start time
(a clock read), and is what is current while its step runs. The SDK span is made with those,
at the noted start time:

- at once, when something needs the span itself: a span started inside the step (its parent's
  ids), a message sent from it (the trace context in its tags), an event, a status, an
  exception, a link;
- else when the step is done and its span is ended off the step's path (``end_spans``, while
  the database works on the step's commit), with the step's end time.

Either way the exporter sees one span with the step's times, its parent and its children, as
if it had been started on the path.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from opentelemetry import context, trace

__all__ = ["DeferredSpan"]

_ROOT = context.Context()
"""The parent of a step span planned while tracing was off: none (an explicit empty context,
not the current one, which inside the step is the span itself)."""


class DeferredSpan(trace.Span):
    """The span of one step: its SDK span is started when first needed (see the module)."""

    def __init__(self, tracer: Any, name: str, attributes: dict[str, Any], parent: Any) -> None:
        self._start = time.time_ns()
        self._tracer = tracer
        self._name = name
        self._attributes = attributes
        self._parent = parent if parent is not None else _ROOT
        self._real: trace.Span | None = None
        # One SDK span per step, whichever thread asks first (the step's, a task of an async
        # step's, the writer ending it); buffered attributes change under it too.
        self._lock = threading.Lock()

    def started(self) -> trace.Span:
        """The SDK span, started now (at the noted start time) if it was not yet."""
        real = self._real
        if real is not None:
            return real
        # A deferred parent (a step inside a step) is started first, outside this span's lock:
        # the SDK asks the parent for its ids while starting this one.
        parent = trace.get_current_span(self._parent)
        if isinstance(parent, DeferredSpan):
            parent.started()
        with self._lock:
            real = self._real
            if real is None:
                real = self._real = self._tracer.start_span(
                    self._name,
                    context=self._parent,
                    attributes=dict(self._attributes),
                    start_time=self._start,
                    record_exception=False,
                    set_status_on_exception=False,
                )
        return real

    # -- what a span does: buffered while nothing needs the SDK span, else forwarded ----------

    def end(self, end_time: int | None = None) -> None:
        self.started().end(end_time=end_time)

    def get_span_context(self) -> trace.SpanContext:
        return self.started().get_span_context()

    def is_recording(self) -> bool:
        real = self._real
        return True if real is None else real.is_recording()

    def update_name(self, name: str) -> None:
        with self._lock:
            real = self._real
            if real is None:
                self._name = name
                return
        real.update_name(name)

    def set_attribute(self, key: str, value: Any) -> None:
        with self._lock:
            real = self._real
            if real is None:
                self._attributes[key] = value
                return
        real.set_attribute(key, value)

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        with self._lock:
            real = self._real
            if real is None:
                self._attributes.update(attributes)
                return
        real.set_attributes(attributes)

    def add_event(
        self, name: str, attributes: Mapping[str, Any] | None = None, timestamp: int | None = None
    ) -> None:
        self.started().add_event(name, attributes, timestamp)

    def add_link(self, context: Any, attributes: Mapping[str, Any] | None = None) -> None:
        self.started().add_link(context, attributes)

    def set_status(self, status: Any, description: str | None = None) -> None:
        self.started().set_status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: Mapping[str, Any] | None = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        self.started().record_exception(exception, attributes, timestamp, escaped)

    def __repr__(self) -> str:
        return f"DeferredSpan({self._name!r}, started={self._real is not None})"
