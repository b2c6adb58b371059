"""A node hosts what it knows: the types its process defines, or those ``Runtime(hosts=)``
names, each by a stable name; an actor no live node hosts is left as it is (issue 16)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import msgspec
import pytest

from promissory.actors import Context, DurableActor, handler, registered_type
from promissory.agents import Agent, ScriptedModel
from promissory.errors import InvalidInputError
from promissory.runtime import Runtime
from tests.actors.kit import sql
from tests.kit import ROOT


class Ping(msgspec.Struct):
    n: int


class Hosted(DurableActor[None], name="tests.hosting.Hosted"):
    @handler
    def ping(self, ctx: Context, msg: Ping) -> int:
        return msg.n


class Other(DurableActor[None]):
    @handler
    def ping(self, ctx: Context, msg: Ping) -> int:
        return -msg.n


def test_a_class_defined_in_a_script_without_a_name_is_refused_with_what_to_do(dsn: str) -> None:
    def ping(self: object, ctx: Context, msg: Ping) -> int:
        return msg.n

    ping.__annotations__ = {"ctx": Context, "msg": Ping, "return": int}
    scripted = type("Scripted", (DurableActor,), {"__module__": "__main__", "ping": handler(ping)})
    assert scripted.kind() == "__main__:Scripted"
    with Runtime(dsn) as rt, pytest.raises(InvalidInputError, match=r"name=\"myapp\.Scripted\""):
        rt.spawn(scripted, id="s")
    assert sql(dsn, "SELECT count(*) FROM actors") == [(0,)]


def test_two_types_claiming_one_name_are_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "promissory.actors")

    class First(DurableActor[None], name="tests.hosting.claimed"):
        pass

    class Second(DurableActor[None], name="tests.hosting.claimed"):
        pass

    assert "two actor types claim the name 'tests.hosting.claimed'" in caplog.text
    assert registered_type("tests.hosting.claimed") is Second


def test_a_node_runs_only_the_types_it_hosts_and_leaves_the_rest_untouched(dsn: str) -> None:
    with Runtime(dsn, hosts=[Hosted]) as only:
        assert only.host.hosted_kinds() == ["tests.hosting.Hosted"]
        with Runtime(dsn, hosts=[]) as client:
            assert client.spawn(Hosted, id="h").ask(Ping(1)).get(timeout=10) == 1
            other = client.spawn(Other, id="o").ask(Ping(2))
            with pytest.raises(TimeoutError):
                other.get(timeout=1.0)
            assert sql(dsn, "SELECT status, node FROM actors WHERE id = 'o'") == [("running", None)]
            # A node that hosts Other comes: it takes the actor up.
            with Runtime(dsn, hosts=[Other]):
                assert other.get(timeout=10) == -2


def test_an_agent_is_hosted_under_its_own_name(dsn: str) -> None:
    scout = Agent("hosting-scout", "Look.", ScriptedModel(["seen"]))
    assert scout.type_name == "agent:hosting-scout"
    with Runtime(dsn, hosts=[scout]) as rt:
        assert rt.host.hosted_kinds() == ["agent:hosting-scout"]
        assert rt.run(scout, "go", id="runs/scout") == "seen"
    assert sql(dsn, "SELECT kind FROM actors WHERE id = 'runs/scout'") == [("agent:hosting-scout",)]


def test_promissory_nodes_lists_the_live_node_with_what_it_hosts(dsn: str) -> None:
    with Runtime(dsn, hosts=[Hosted]) as rt:
        rt.spawn(Hosted, id="h").ask(Ping(1)).get(timeout=10)
        done = subprocess.run(
            [sys.executable, "-m", "promissory", "--dsn", dsn, "--json", "nodes"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        [node] = [n for n in json.loads(done.stdout) if n["id"] == rt.node_id]
        assert node["live"] is True
        assert node["kinds"] == ["tests.hosting.Hosted"]
        assert node["actors"] == 1
        text = subprocess.run(
            [sys.executable, "-m", "promissory", "--dsn", dsn, "nodes"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        assert rt.node_id in text and "tests.hosting.Hosted" in text
    after = subprocess.run(
        [sys.executable, "-m", "promissory", "--dsn", dsn, "--json", "nodes"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    [ended] = [n for n in json.loads(after.stdout) if n["id"] == rt.node_id]
    assert ended["live"] is False and ended["ended_at"] is not None
