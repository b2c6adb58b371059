"""Every error promissory raises, under one root.

The tree::

    PromissoryError
    ├── InvalidInputError          bad input, rejected before anything was written
    │   ├── InvalidIdError         empty, too long, or holding control characters
    │   ├── InvalidTagsError       tags that are not an object of strings
    │   └── EncodeError            a value msgspec cannot encode as JSON
    ├── InvalidDefinitionError     a class, handler or runnable promissory cannot use as written
    ├── DecodeError                a stored value does not decode to the type asked for
    ├── PromiseNotFoundError       no promise has that id
    ├── ScheduleNotFoundError      no schedule has that id
    ├── RunNotFinishedError        a run to forget still has work pending or running
    ├── StoreError                 the store could not do what was asked
    │   ├── StoreUnavailableError  the database stayed unreachable past the configured wait
    │   ├── StoreBusyError         the database kept timing out or canceling a statement
    │   ├── SchemaTooNewError      the database holds a newer schema than this code knows
    │   ├── FencedError            a write for an actor activation that is no longer current
    │   └── QueryError             a statement given to ``run_sql`` (``promissory sql``) failed
    ├── PromiseFailedError         a promise was rejected; raised where its value is awaited
    │   ├── PromiseTimedOutError   ... because its timeout passed
    │   ├── PromiseCanceledError   ... because it was canceled
    │   └── RemoteError            ... with an error whose type could not be rebuilt here
    ├── NondeterminismError        a replay asked for something other than what the journal holds
    ├── ActorError                 about an actor, as a whole
    │   ├── ActorNotFoundError     no actor has that id
    │   ├── ActorExistsError       an actor with that id exists, of another kind
    │   ├── ActorStoppedError      the actor was stopped, or given up by its supervisor
    │   ├── ActorTypeNotHostedError this node does not host the actor's type
    │   └── ActorBuildError        the actor's class raised while an activation was made
    ├── UnknownMessageError        the actor has no handler for a message's type
    ├── EscalationError            a supervisor's children failed more often than it allows
    ├── ChildFailedError           a child actor failed and its supervisor gave it up
    ├── ChildCanceledError         a child actor's work was canceled
    ├── StepTimedOutError          a step's attempt took longer than its timeout
    ├── ModelError                 a model call failed (with its kind, and whether to retry)
    ├── MCPServerError             an MCP server could not be reached, or a call to it failed
    ├── OutputInvalidError         an agent's answer did not fit its output type
    ├── AgentNotFoundError         no agent of that name is defined in this process
    ├── ServeError                 a server (web view, protocol) cannot be served as asked
    └── ProtocolError              a durable-promise protocol request refused, with its status

Control-flow signals derive from ``BaseException`` so that a user's ``except Exception``
cannot swallow them; they are not errors and are not in this tree.

Errors are stored as JSON when they reject a promise (type, message, traceback and their
arguments), so each error here is constructible from its positional arguments alone, and each
is stored under its name in this module. Names earlier versions stored (``ChildFailed``,
``promissory.actors._supervisor.EscalationError``…) are registered too (see
``promissory.store.register_error``), so rows written before a rename still rebuild.
"""

from __future__ import annotations

__all__ = [
    "ActorBuildError",
    "ActorError",
    "ActorExistsError",
    "ActorNotFoundError",
    "ActorStoppedError",
    "ActorTypeNotHostedError",
    "AgentNotFoundError",
    "ChildCanceledError",
    "ChildFailedError",
    "DecodeError",
    "EncodeError",
    "EscalationError",
    "FencedError",
    "InvalidDefinitionError",
    "InvalidIdError",
    "InvalidInputError",
    "InvalidTagsError",
    "MCPServerError",
    "ModelError",
    "NondeterminismError",
    "OutputInvalidError",
    "PromiseCanceledError",
    "PromiseFailedError",
    "PromiseNotFoundError",
    "PromiseTimedOutError",
    "PromissoryError",
    "ProtocolError",
    "QueryError",
    "RemoteError",
    "RunNotFinishedError",
    "ServeError",
    "ScheduleNotFoundError",
    "SchemaTooNewError",
    "StepTimedOutError",
    "StoreBusyError",
    "StoreError",
    "StoreUnavailableError",
    "UnknownMessageError",
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


class InvalidDefinitionError(PromissoryError, TypeError):
    """A class, handler or runnable is written in a way promissory cannot use: a handler
    without a message annotation, two handlers for one message type, a supervisor's bad
    intensity, an object ``Runtime.run`` cannot start. Found when it is defined or first used;
    a ``TypeError``, as Python's own complaints about a definition are.
    """


class DecodeError(PromissoryError):
    """A stored value does not decode to the type that was asked for."""


class PromiseNotFoundError(PromissoryError, LookupError):
    """No promise has the given id."""


class ScheduleNotFoundError(PromissoryError, LookupError):
    """No schedule has the given id (``rt.pause_schedule``, ``promissory schedules pause``…)."""


class RunNotFinishedError(PromissoryError):
    """A run cannot be forgotten: it, or something under it or owned by it, is still pending
    or running (``Store.forget`` without ``force``, or a forced forget whose actors did not
    end in time).

    Attributes:
        run_id: the run's id.
        unfinished: what is still pending or running, as ``"id (what)"`` strings (the
            first few).

    """

    def __init__(
        self, message: str = "", run_id: str = "", unfinished: list[str] | None = None
    ) -> None:
        super().__init__(message, run_id, list(unfinished or []))
        self.run_id = run_id
        self.unfinished = list(unfinished or [])


class StoreError(PromissoryError):
    """The store could not carry out an operation."""


class StoreUnavailableError(StoreError):
    """The database stayed unreachable for longer than the store is configured to wait."""


class StoreBusyError(StoreError):
    """The database did not finish a statement in time, or canceled it to break a conflict
    (a statement or lock timeout, a deadlock), for longer than the store is configured to wait.

    Like ``StoreUnavailableError``, it says nothing about the work itself: the same statement
    may well succeed later. The runtime retries its own bookkeeping after either.
    """


class SchemaTooNewError(StoreError):
    """The database holds a schema newer than this promissory knows; writes are refused."""


class FencedError(StoreError):
    """A write was made for an actor activation that a newer activation has replaced."""


class QueryError(StoreError):
    """A statement given to ``run_sql`` (``promissory sql``) failed, or was not run.

    Attributes:
        statement: the 1-based number of the statement it is about, when there is one.
        sqlstate: the server's error code, when the server refused it.

    """

    def __init__(
        self, message: str, statement: int | None = None, sqlstate: str | None = None
    ) -> None:
        super().__init__(message, statement, sqlstate)
        self.statement = statement
        self.sqlstate = sqlstate


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


class ActorTypeNotHostedError(ActorError, LookupError):
    """The node does not host the actor's type: its class is not defined (imported) in this
    process, or ``Runtime(hosts=...)`` leaves it out. A node that hosts it runs the actor.
    """


class ActorBuildError(ActorError):
    """The actor's class raised while an activation of it was made (its ``__init__``); the
    exception it raised is the ``__cause__``. The node reports it as the actor's crash.
    """


class UnknownMessageError(PromissoryError):
    """The actor has no handler for a message's type; the message is rejected with this."""


class EscalationError(PromissoryError):
    """A supervisor's children failed more often than its intensity allows (it escalates), or
    a supervisor was set up in a way it cannot run (a pool with other than one child spec).
    """


class ChildFailedError(PromissoryError):
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


class ChildCanceledError(PromissoryError):
    """A child actor's work was canceled; raised where the parent awaits it.

    Attributes:
        child_id: the id of the child actor.

    """

    def __init__(self, message: str, child_id: str | None = None) -> None:
        super().__init__(message, child_id)
        self.child_id = child_id


class MCPServerError(PromissoryError):
    """An MCP server could not be reached (or broke off), or a tool call failed there; a tool
    call's failure becomes an error result for the model, naming the server.
    """


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


class OutputInvalidError(PromissoryError):
    """An agent's final answer did not fit its ``output_type``, after the corrections allowed."""


class AgentNotFoundError(PromissoryError, LookupError):
    """No agent of the given name is defined in this process (agents register when they are
    made: import the module that defines it before starting the runtime).
    """


class ServeError(PromissoryError):
    """A server (the web view, the protocol) cannot be served as asked (an address refused,
    a port taken).
    """


class ProtocolError(PromissoryError):
    """A request of the durable-promise protocol refused, with the status it is answered with.

    Example:
        >>> ProtocolError(404, "promise p not found").status
        404

    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message

    def __str__(self) -> str:
        return self.message
