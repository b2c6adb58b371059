"""Testing helpers: crash tests in child processes, and side effects counted across them."""

from ._effects import effect, read_effects
from ._harness import CrashTest, Run

__all__ = ["CrashTest", "Run", "effect", "read_effects"]
