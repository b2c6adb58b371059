"""A stored failure is data anyone who can settle a promise writes: rebuilding it must never
import a module named in it, nor make anything but an ``Exception`` (issue 14, item 1)."""

from __future__ import annotations

import sys
from typing import Any

import psycopg
import pytest

import promissory.errors
from promissory import register_error
from promissory.actors import Reply
from promissory.errors import InvalidInputError, RemoteError
from promissory.store import ErrorInfo, Store, decode, encode, error_info, rebuild_error

from .conftest import RunPython


def reject_by_sql(db: psycopg.Connection[Any], id: str, value: str) -> None:
    """A rejection written as an outsider can: plain SQL, any JSON."""
    db.execute(
        "INSERT INTO promises (id, state, value, settled_at) "
        "VALUES (%s, 'rejected', %s::jsonb, clock_timestamp())",
        (id, value),
    )


def test_a_stored_type_in_a_module_not_imported_is_not_imported(
    store: Store, db: psycopg.Connection[Any]
) -> None:
    # `this` prints the Zen of Python when imported; `tabnanny.NannyNag` is a real exception.
    for module in ("this", "tabnanny"):
        assert module not in sys.modules
    reject_by_sql(db, "e/this", '{"type": "this.Anything", "message": "m", "traceback": "tb"}')
    reject_by_sql(
        db, "e/nag", '{"type": "tabnanny.NannyNag", "message": "n", "args": [1, "a", "b"]}'
    )

    for id, type_name, message in (
        ("e/this", "this.Anything", "m"),
        ("e/nag", "tabnanny.NannyNag", "n"),
    ):
        with pytest.raises(RemoteError) as raised:
            Reply(id, store).get(timeout=5)
        assert (raised.value.type_name, raised.value.message) == (type_name, message)

    assert "this" not in sys.modules
    assert "tabnanny" not in sys.modules


@pytest.mark.parametrize(
    "type_name",
    [
        "builtins.SystemExit",
        "builtins.KeyboardInterrupt",
        "builtins.GeneratorExit",
        "builtins.BaseException",
        "promissory.actors._signals.Suspend",
    ],
)
def test_a_stored_base_exception_that_is_not_an_exception_comes_back_as_a_remote_error(
    store: Store, db: psycopg.Connection[Any], type_name: str
) -> None:
    import promissory.actors._signals  # noqa: F401 - imported, and still refused

    reject_by_sql(
        db, "e/base", f'{{"type": "{type_name}", "message": "42", "args": [42], "traceback": "tb"}}'
    )

    with pytest.raises(RemoteError) as raised:
        Reply("e/base", store).get(timeout=5)

    assert raised.value.type_name == type_name
    assert raised.value.message == "42"
    assert raised.value.remote_traceback == "tb"


def test_a_stored_system_exit_does_not_end_the_process_that_reads_it(
    dsn: str, db: psycopg.Connection[Any], run_python: RunPython
) -> None:
    with Store(dsn):
        pass
    reject_by_sql(db, "e/exit", '{"type": "builtins.SystemExit", "message": "42", "args": [42]}')
    code = (
        "import sys\n"
        "from promissory import Store\n"
        "from promissory.actors import Reply\n"
        "from promissory.errors import RemoteError\n"
        "with Store(sys.argv[1]) as store:\n"
        "    try:\n"
        "        Reply('e/exit', store).get(timeout=5)\n"
        "    except RemoteError as exc:\n"
        "        print('remote', exc.type_name)\n"
    )

    done = run_python(code, dsn)

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "remote builtins.SystemExit"


def test_a_name_reached_only_through_a_module_getattr_is_not_looked_up() -> None:
    # A module's __getattr__ may import or run code; only its namespace is read.
    import types

    calls: list[str] = []
    module = types.ModuleType("promissory_test_lazy")

    def lazy(name: str) -> Any:
        calls.append(name)
        return ValueError

    module.__getattr__ = lazy  # type: ignore[method-assign]
    sys.modules[module.__name__] = module
    try:
        rebuilt = rebuild_error(ErrorInfo(type="promissory_test_lazy.Lazy", message="m"))
    finally:
        del sys.modules[module.__name__]

    assert isinstance(rebuilt, RemoteError)
    assert calls == []


class Renamed(Exception):
    """Stored under a name that no longer exists, and registered under it."""


def test_a_registered_error_type_is_rebuilt_under_its_registered_name() -> None:
    register_error(Renamed, "billing.old_errors.QuotaExceeded")

    rebuilt = rebuild_error(
        ErrorInfo(type="billing.old_errors.QuotaExceeded", message="over", args=["over"])
    )

    assert type(rebuilt) is Renamed
    assert rebuilt.args == ("over",)


@pytest.mark.parametrize("cls", [SystemExit, KeyboardInterrupt, BaseException, int])
def test_only_exception_subclasses_can_be_registered(cls: Any) -> None:
    with pytest.raises(InvalidInputError):
        register_error(cls)


@pytest.mark.parametrize(
    ("former", "now"),
    [
        ("promissory.errors.ChildFailed", "ChildFailedError"),
        ("promissory.errors.ChildCancelled", "ChildCanceledError"),
        ("promissory.actors._supervisor.EscalationError", "EscalationError"),
        ("promissory.actors._activation.UnknownMessageError", "UnknownMessageError"),
        ("promissory.agents._loop.OutputInvalidError", "OutputInvalidError"),
    ],
)
def test_a_row_stored_under_a_former_name_of_a_promissory_error_rebuilds_as_that_error(
    former: str, now: str
) -> None:
    rebuilt = rebuild_error(ErrorInfo(type=former, message="m", args=["m"]))

    assert type(rebuilt) is getattr(promissory.errors, now)
    assert str(rebuilt) == "m"


def test_every_promissory_error_is_stored_under_its_name_in_promissory_errors() -> None:
    for name in promissory.errors.__all__:
        cls = getattr(promissory.errors, name)
        args: list[object] = ["m", "a"] if cls is promissory.errors.RemoteError else ["m"]
        if cls is promissory.errors.ProtocolError:
            args = [404, "m"]  # the protocol's status, and the message
        info = error_info(cls(*args))
        if cls is promissory.errors.RemoteError:
            continue  # stored under the remote type's own name
        assert info.type == f"promissory.errors.{name}"
        assert type(rebuild_error(info)) is cls


def test_a_failure_is_stored_in_one_shape_with_the_failed_actor_only_when_there_is_one() -> None:
    plain = ErrorInfo(type="app.Boom", message="m", args=["m"])
    of_actor = ErrorInfo(type="app.Boom", message="m", args=["m"], failed_actor="a/b")

    assert encode(plain) == '{"type":"app.Boom","message":"m","args":["m"]}'
    assert encode(of_actor) == '{"type":"app.Boom","message":"m","args":["m"],"failed_actor":"a/b"}'
    assert decode(encode(of_actor).encode(), ErrorInfo) == of_actor
