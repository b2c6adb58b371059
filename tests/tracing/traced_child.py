"""A process that runs (or resumes) the traced lead agent with spans appended to a file.

``python -m tests.tracing.traced_child SPANS_FILE`` on ``$PROMISSORY_DSN``; tracing is
configured before the runtime opens, so the recovery pass's replays are traced too. Prints
``OUTPUT <json>`` when the run has finished.
"""

from __future__ import annotations

import json
import os
import sys

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from promissory import Runtime, enable_tracing
from tests.tracing.kit import RUN, FileExporter, lead


def main(path: str) -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(FileExporter(path)))
    enable_tracing(provider)
    with Runtime(os.environ["PROMISSORY_DSN"], suspend_after=0.5) as rt:
        output = rt.run(lead, "Compare X and Y", id=RUN, timeout=60)
    print("OUTPUT " + json.dumps(output), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
