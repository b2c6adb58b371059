"""Roles the runtime tests run in child processes: ``python -m tests.runtime.proc ROLE …``.

The database is ``$PROMISSORY_DSN``. Each role prints one JSON line as its result.

* ``serve ID…``: print ``READY``, wait for a line on stdin, then start a ``Runtime`` and keep it
  up until every message ``ID`` is settled (so two of them can be started at the same moment).
* ``ask ACTOR TEXT``: start a ``Runtime`` (hosting nothing) and ask ``ACTOR`` a ``Ping``.
* ``reply ID``: with only a ``Store``, rebuild the ``Reply`` of message ``ID`` and wait for it.
"""

from __future__ import annotations

import os
import sys

import msgspec

from promissory.actors import Reply
from promissory.runtime import Runtime
from promissory.store import Store
from tests.actors.kit import Ping, Pong


def serve(ids: list[str]) -> object:
    print("READY", flush=True)
    sys.stdin.readline()
    with Runtime(os.environ["PROMISSORY_DSN"]) as rt:
        assert rt.store is not None
        for id in ids:
            rt.store.wait(id, timeout=30)
        return {"node": rt.node_id, "recovery": rt.recovery}


def ask(actor: str, text: str) -> object:
    with Runtime(os.environ["PROMISSORY_DSN"]) as rt:
        reply = rt.ref(actor).ask(Ping(text))
        pong = reply.get(timeout=10, type=Pong)
        return {"reply": reply.id, "pong": pong, "node": rt.node_id, "pid": os.getpid()}


def reply(id: str) -> object:
    with Store(os.environ["PROMISSORY_DSN"]) as store:
        return Reply(id, store, Pong).get(timeout=10)


def main(argv: list[str]) -> int:
    role, args = argv[0], argv[1:]
    result = {
        "serve": lambda: serve(args),
        "ask": lambda: ask(*args),
        "reply": lambda: reply(*args),
    }[role]()
    print(msgspec.json.encode(result).decode(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
