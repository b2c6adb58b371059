"""What the command prints is safe to print: stored text cannot drive the terminal, and no
password is shown (issue 14, items 2 and 3)."""

from __future__ import annotations

import json

import pytest

from promissory import Store

from .conftest import Cli
from .kit import child_env, one_clean_line, promissory_args, run

# ESC ] 52 sets the clipboard (OSC 52), BEL ends it; ESC [ 2 J clears the screen; U+009B is
# the one-character CSI; U+202E reverses the text that follows.
HOSTILE = "ok\x1b]52;c;ZXZpbA==\x07\x1b[2J\x9b31m\u202eevil"
RAW = ("\x1b", "\x07", "\x9b", "\u202e")


def assert_safe(text: str) -> None:
    for ch in RAW:
        assert ch not in text, (repr(ch), text)


@pytest.fixture
def hostile(dsn: str) -> str:
    """A schema holding a run whose steps and result carry terminal control sequences."""
    with Store(dsn) as store:
        store.create("run/1", param={"task": HOSTILE})
        store.create("run/1/1")
        store.resolve("run/1/1", {"output": HOSTILE})
        store.create("run/1/2")
        store.reject("run/1/2", HOSTILE)
        store.resolve("run/1", {"output": HOSTILE})
    return dsn


def test_show_escapes_control_characters_in_stored_values(cli: Cli, hostile: str) -> None:
    done = cli("show", "run/1")

    assert done.returncode == 0, done.stderr
    assert_safe(done.stdout)
    assert "ok\\x1b]52;c;ZXZpbA==\\x07" in done.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["promises"],
        ["promises", "--json"],
        ["show", "run/1", "--json"],
        ["sql", "SELECT id, value, value->>'output' AS text FROM promises"],
        ["sql", "SELECT value->>'output' AS text FROM promises", "--json"],
    ],
)
def test_every_listing_escapes_control_characters(cli: Cli, hostile: str, args: list[str]) -> None:
    done = cli(*args)

    assert done.returncode == 0, done.stderr
    assert_safe(done.stdout)


def test_json_output_stays_valid_json_with_the_characters_escaped(cli: Cli, hostile: str) -> None:
    done = cli("sql", "SELECT value->>'output' AS text FROM promises WHERE id = 'run/1'", "--json")

    assert json.loads(done.stdout) == [{"text": HOSTILE}]


def test_tree_escapes_control_characters_in_what_the_actor_rows_hold(cli: Cli, dsn: str) -> None:
    with Store(dsn) as store:
        store.read(
            lambda conn: conn.execute(
                "INSERT INTO actors (id, kind) VALUES ('a/1', %s)", (f"mod:{HOSTILE}",)
            )
        )

    for args in (["tree"], ["show", "a/1"]):
        done = cli(*args)
        assert done.returncode == 0, done.stderr
        assert_safe(done.stdout)


def test_an_error_message_escapes_control_characters(cli: Cli, dsn: str) -> None:
    line = one_clean_line(cli("resolve", "x", "--value", HOSTILE))

    assert_safe(line)
    assert "\\x1b" in line


# -- passwords ---------------------------------------------------------------------------------


def test_dsn_masks_the_password_unless_asked_to_show_it(cli: Cli) -> None:
    secret = "postgresql://ann:s3cret-pw@127.0.0.1:1/app"

    masked = cli("dsn", dsn=secret)
    masked_json = cli("dsn", "--json", dsn=secret)
    shown = cli("dsn", "--show-password", dsn=secret)

    assert masked.stdout.strip() == "postgresql://ann:***@127.0.0.1:1/app"
    assert json.loads(masked_json.stdout) == {"dsn": "postgresql://ann:***@127.0.0.1:1/app"}
    assert shown.stdout.strip() == secret


@pytest.mark.parametrize(
    "secret_dsn",
    [
        "postgresql://ann:pa%zzword@127.0.0.1:1/app",  # a bad % escape, quoted by the parser
        "postgresql://ann@127.0.0.1:1/app?password=pa%zzword",
        "host=127.0.0.1 port=1 password='pa%zzword' dbname",  # no '=' after dbname
    ],
)
@pytest.mark.parametrize("args", [["dsn"], ["sql", "select 1"], ["migrate"], ["tree", "--json"]])
def test_a_dsn_that_does_not_parse_never_shows_its_password(
    cli: Cli, secret_dsn: str, args: list[str]
) -> None:
    done = cli(*args, dsn=secret_dsn)

    assert done.returncode != 0
    assert "pa%zzword" not in done.stderr + done.stdout
    assert "zzword" not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


def test_a_password_in_promissory_dsn_is_not_shown_when_the_server_is_unreachable(
    home: object,
) -> None:
    env = child_env("postgresql://ann:hunter2@127.0.0.1:1/app", home)  # type: ignore[arg-type]

    done = run(promissory_args(None, "promises"), env)

    assert done.returncode == 1
    assert "hunter2" not in done.stderr
    assert "***" in done.stderr
