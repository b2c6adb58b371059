"""Hand-offs between two threads by one lock: a write's result (``WriteFuture``) and a
wake-up (``Signal``).

Every op a caller does not write itself is completed by the writer thread and waited on by
its caller, and every reply waited on is woken by the thread that saw its settle: a hand-off
between threads per step or message. The standard library's ``concurrent.futures.Future``
and ``threading.Event`` pay for what these hand-offs never use (callbacks, waiters for
``wait``/``as_completed``, a condition variable that allocates a lock for every wait and
wakes its waiter through it): measured on this path, 86 µs of CPU per hand-off against 62
µs for a single lock that the waiter blocks on and the other thread releases
(``BENCHMARKS.md``, eleventh pass). These are that lock, with the part of each interface the
store uses, and their states spelled out.
"""

from __future__ import annotations

import threading
from concurrent.futures import CancelledError
from typing import Any, Generic, TypeVar

__all__ = ["Signal", "WriteFuture"]

T = TypeVar("T")

PENDING, RUNNING, FINISHED, CANCELLED = "pending", "running", "finished", "cancelled"
"""A write is pending (queued), running (taken into a batch: it can no longer be withdrawn),
finished (its result or error is set) or cancelled (withdrawn before it ran)."""

# ``set`` and ``clear`` race for a signal, ``cancel`` (the caller's thread) and
# ``set_running_or_notify_cancel`` (the writer's) for a pending write: one lock for every
# hand-off decides it (its hold is a few bytecodes, taken a few times per hand-off at most: no
# contention worth a lock each).
_transition = threading.Lock()


class Signal:
    """A flag one thread sets and another waits for, as ``threading.Event`` (set, wait,
    clear) with one lock: held while the flag is clear, released while it is set.

    Example:
        >>> woken = Signal()
        >>> woken.set()
        >>> woken.wait(0.1)
        True

    """

    __slots__ = ("_latch", "_set")

    def __init__(self) -> None:
        self._set = False
        self._latch = threading.Lock()
        self._latch.acquire()

    def is_set(self) -> bool:
        """Whether the flag is set."""
        return self._set

    def set(self) -> None:
        """Set the flag, waking every waiter (setting it again changes nothing)."""
        with _transition:
            if self._set:
                return
            self._set = True
        self._latch.release()

    def clear(self) -> None:
        """Clear the flag: a ``wait`` from now on blocks until the next ``set``."""
        with _transition:
            if not self._set:
                return
            self._set = False
        # Free, or held a moment by a waiter passing through ``wait``: never held long.
        self._latch.acquire()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the flag is set or ``timeout`` seconds pass; return whether it is set."""
        if self._set:
            return True
        if self._latch.acquire(True, -1 if timeout is None else max(0.0, timeout)):
            self._latch.release()  # open for any other waiter
            return True
        return self._set

    def __repr__(self) -> str:
        return f"<Signal {'set' if self._set else 'clear'}>"


class WriteFuture(Generic[T]):
    """A write's result, once its batch has committed (or its error).

    Example:
        >>> future = store.submit(op)  # doctest: +SKIP
        >>> future.result(timeout=5)  # doctest: +SKIP

    """

    __slots__ = ("_state", "_value", "_error", "_done")

    def __init__(self) -> None:
        self._state = PENDING
        self._value: Any = None
        self._error: BaseException | None = None
        self._done = Signal()
        """Set once the write is finished or withdrawn: what a waiter blocks on."""

    def done(self) -> bool:
        """Whether the write finished (committed or failed) or was withdrawn."""
        return self._state is FINISHED or self._state is CANCELLED

    def cancelled(self) -> bool:
        """Whether the write was withdrawn before it ran (nothing was written)."""
        return self._state is CANCELLED

    def cancel(self) -> bool:
        """Withdraw the write if the writer has not taken it yet; ``True`` if withdrawn."""
        with _transition:
            if self._state is CANCELLED:
                return True
            if self._state is not PENDING:
                return False
            self._state = CANCELLED
        self._done.set()
        return True

    def set_running_or_notify_cancel(self) -> bool:
        """Mark the write taken for a batch; ``False`` if it was withdrawn (skip it)."""
        with _transition:
            if self._state is CANCELLED:
                return False
            if self._state is not PENDING:
                raise RuntimeError(f"a write future cannot start running when {self._state}")
            self._state = RUNNING
        return True

    def set_result(self, value: T) -> None:
        """Complete the write with its result (the writer, after the COMMIT)."""
        self._finish(value, None)

    def set_exception(self, error: BaseException) -> None:
        """Complete the write with its error."""
        self._finish(None, error)

    def _finish(self, value: Any, error: BaseException | None) -> None:
        if self._state is FINISHED or self._state is CANCELLED:
            raise RuntimeError(f"a write future cannot be set when {self._state}")
        self._value, self._error = value, error
        self._state = FINISHED
        self._done.set()

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The write's error once done (``None`` if it succeeded).

        Raises:
            TimeoutError: ``timeout`` seconds passed and the write is not done.
            CancelledError: the write was withdrawn.

        """
        if not self._done.wait(timeout):
            raise TimeoutError(f"the write was not done within {timeout:g} s")
        if self._state is CANCELLED:
            raise CancelledError
        return self._error

    def result(self, timeout: float | None = None) -> T:
        """The write's result once done; raises its error (see ``exception``)."""
        error = self.exception(timeout)
        if error is not None:
            raise error
        return self._value  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"<WriteFuture {self._state}>"
