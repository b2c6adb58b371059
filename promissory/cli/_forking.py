"""``promissory fork ID --at STEP``: start a new run from a run's kept steps, with a changed
prompt or model, host it here to its end, and print its result (``show`` links the two:
``fork_links`` in ``_inspect``).
"""

from __future__ import annotations

import argparse

from ..errors import InvalidInputError, PromiseNotFoundError

__all__ = ["cmd_fork"]


def cmd_fork(args: argparse.Namespace) -> int:
    """Fork a run at a step, run the fork here, and print its result."""
    from ..agents import RunHandle
    from ..runtime import Runtime
    from ._commands import (
        CONNECT_TIMEOUT,
        EXIT_USAGE,
        CommandError,
        dsn_of,
        print_json,
        say,
        wants_json,
    )
    from ._progress import progress
    from ._serve import TargetError, load_target

    if args.module:
        try:
            load_target(args.module)
        except TargetError as exc:
            raise CommandError(str(exc), EXIT_USAGE) from None
    with progress(args), Runtime(dsn_of(args), connect_timeout=CONNECT_TIMEOUT) as rt:
        assert rt.store is not None
        try:
            handle: RunHandle = rt.fork(
                args.id, at_step=args.at, prompt=args.prompt, model=args.model, id=args.fork_id
            )
        except PromiseNotFoundError:
            raise CommandError(f"no run has the id {args.id!r}") from None
        except InvalidInputError as exc:
            raise CommandError(str(exc), EXIT_USAGE) from None
        except LookupError as exc:
            raise CommandError(f"{exc} (pass --module)") from None
        details = handle.details()
    if wants_json(args):
        print_json(
            {"run_id": handle.id, "forked": args.id, "at": args.at, "result": details.output}
        )
    else:
        say(f"{handle.id} (forked from {args.id} at step {args.at}):\n{details.output}")
    return 0
