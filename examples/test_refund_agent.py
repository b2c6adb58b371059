"""Crash-testing an agent with promissory's pytest plugin (the ``crash_test`` fixture).

python -m pytest examples/test_refund_agent.py
"""

from __future__ import annotations

from typing import Any

import refund_agent


def test_the_refund_agent_survives_a_crash_at_every_step(crash_test: Any) -> None:
    report = crash_test(refund_agent.scenario, random_kills=5, check_idempotency=("refund",))
    assert report.outcome == "Refunded 42 for order 17."
    assert report.boundaries >= 6  # four model turns and two tool steps, at least
