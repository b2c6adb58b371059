"""Every error promissory raises, under one root.

The tree::

    PromissoryError
    ├── InvalidInputError          bad input, rejected before anything was written
    │   ├── InvalidIdError         empty, too long, or holding control characters
    │   ├── InvalidTagsError       tags that are not an object of strings
    │   └── EncodeError            a value msgspec cannot encode as JSON
    ├── DecodeError                a stored value does not decode to the type asked for
    ├── PromiseNotFoundError       no promise has that id
    ├── StoreError                 the store could not do what was asked
    │   ├── StoreUnavailableError  the database stayed unreachable past the configured wait
    │   ├── SchemaTooNewError      the database holds a newer schema than this code knows
    │   └── FencedError            a write for an actor activation that is no longer current
    ├── PromiseFailedError         a promise was rejected; raised where its value is awaited
    │   ├── PromiseTimedOutError   ... because its timeout passed
    │   ├── PromiseCanceledError   ... because it was canceled
    │   └── RemoteError            ... with an error whose type could not be rebuilt here
    ├── NondeterminismError        a replay asked for something other than what the journal holds
    ├── ActorError                 about an actor, as a whole
    │   ├── ActorNotFoundError     no actor has that id
    │   ├── ActorExistsError       an actor with that id exists, of another kind
    │   └── ActorStoppedError      the actor was stopped, or given up by its supervisor
    ├── ChildFailed                a child actor failed and its supervisor gave it up
    ├── ChildCancelled             a child actor's work was canceled
    ├── StepTimedOutError          a step's attempt took longer than its timeout
    └── ModelError                 a model call failed (with its kind, and whether to retry)

Control-flow signals derive from ``BaseException`` so that a user's ``except Exception``
cannot swallow them; they are not errors and are not in this tree.

Errors are stored as JSON when they reject a promise (type, message, traceback and their
arguments), so each error here is constructible from its positional arguments alone.
"""

from __future__ import annotations

__all__ = [
    "ActorError",
    "ActorExistsError",
    "ActorNotFoundError",
    "ActorStoppedError",
    "ChildCancelled",
    "ChildFailed",
    "DecodeError",
    "EncodeError",
    "FencedError",
    "InvalidIdError",
    "InvalidInputError",
    "InvalidTagsError",
    "ModelError",
    "NondeterminismError",
    "PromiseCanceledError",
    "PromiseFailedError",
    "PromiseNotFoundError",
    "PromiseTimedOutError",
    "PromissoryError",
    "RemoteError",
    "SchemaTooNewError",
    "StepTimedOutError",
    "StoreError",
    "StoreUnavailableError",
]


class PromissoryError(Exception):
    """The root of every error promissory raises.

    The first positional argument is the message; any further ones are the error's evidence,
    kept in ``args`` so that a stored error rebuilds from its arguments alone.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class InvalidInputError(PromissoryError, ValueError):
    """Input was rejected before anything was written."""


class InvalidIdError(InvalidInputError):
    """A promise or actor id is empty, too long, or holds control characters."""


class InvalidTagsError(InvalidInputError):
    """Tags must be a mapping of strings to strings."""


class EncodeError(InvalidInputError):
    """A value cannot be encoded as JSON by msgspec."""


class DecodeError(PromissoryError):
    """A stored value does not decode to the type that was asked for."""


class PromiseNotFoundError(PromissoryError, LookupError):
    """No promise has the given id."""


class StoreError(PromissoryError):
    """The store could not carry out an operation."""


class StoreUnavailableError(StoreError):
    """The database stayed unreachable for longer than the store is configured to wait."""


class SchemaTooNewError(StoreError):
    """The database holds a schema newer than this promissory knows; writes are refused."""


class FencedError(StoreError):
    """A write was made for an actor activation that a newer activation has replaced."""


class PromiseFailedError(PromissoryError):
    """A promise was rejected; raised where its value is awaited.

    Attributes:
        promise_id: the id of the rejected promise, when known.

    """

    def __init__(self, message: str = "", promise_id: str | None = None) -> None:
        super().__init__(message, promise_id)
        self.promise_id = promise_id


class PromiseTimedOutError(PromiseFailedError):
    """A promise was rejected because its timeout passed before it was settled."""


class PromiseCanceledError(PromiseFailedError):
    """A promise was canceled before it was settled."""


class RemoteError(PromiseFailedError):
    """A stored failure whose exception type could not be rebuilt in this process.

    Attributes:
        type_name: the qualified name of the original exception type.
        remote_traceback: the traceback text recorded where it was raised.

    """

    def __init__(
        self, type_name: str, message: str = "", remote_traceback: str | None = None
    ) -> None:
        PromissoryError.__init__(self, type_name, message, remote_traceback)
        self.promise_id: str | None = None
        self.type_name = type_name
        self.message = message
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message}"


class NondeterminismError(PromissoryError):
    """A replayed handler asked for a step other than the one its journal holds.

    Attributes:
        step_id: the id of the step whose record did not match.

    """

    def __init__(self, message: str, step_id: str | None = None) -> None:
        super().__init__(message, step_id)
        self.step_id = step_id


class ActorError(PromissoryError):
    """An error about an actor as a whole."""


class ActorNotFoundError(ActorError, LookupError):
    """No actor has the given id."""


class ActorExistsError(ActorError):
    """An actor with that id already exists, of another kind."""


class ActorStoppedError(ActorError):
    """The actor was stopped, or given up by its supervisor, before handling the message."""


class ChildFailed(PromissoryError):
    """A child actor failed and was given up; raised where the parent awaits it.

    The name reads as what happened to the child; the original failure is ``__cause__``
    and, as stored data, ``cause``.

    Attributes:
        child_id: the id of the child actor.
        cause: the child's failure, rebuilt from the store.

    """

    def __init__(self, message: str, child_id: str | None = None) -> None:
        super().__init__(message, child_id)
        self.child_id = child_id
        self.cause: BaseException | None = None


class ChildCancelled(PromissoryError):
    """A child actor's work was canceled; raised where the parent awaits it.

    Attributes:
        child_id: the id of the child actor.

    """

    def __init__(self, message: str, child_id: str | None = None) -> None:
        super().__init__(message, child_id)
        self.child_id = child_id


class ModelError(PromissoryError):
    """A model call failed.

    Attributes:
        kind: ``rate_limit``, ``timeout``, ``server``, ``bad_request``, ``auth``,
            ``context_length``, ``malformed_output`` or ``connection``.
        retryable: whether trying again may succeed (a step's ``RetryPolicy`` honours it).
        retry_after: seconds the provider asked to wait, if it said.
        status: the HTTP status, if there was one.

    """

    def __init__(
        self,
        message: str,
        kind: str = "server",
        retryable: bool = True,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message, kind, retryable, retry_after, status)
        self.kind = kind
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status


class StepTimedOutError(PromissoryError, TimeoutError):
    """A step's attempt took longer than its timeout (or its message's deadline).

    Attributes:
        step_id: the step's id.

    """

    def __init__(self, message: str, step_id: str | None = None) -> None:
        super().__init__(message, step_id)
        self.step_id = step_id
