"""The one error type users see.

A `HypernymError` is a `ValueError` whose message says what was wrong and how to fix it. The CLI
prints it without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["HypernymError"]


class HypernymError(ValueError):
    """Bad input or a failed precondition, explained for the user."""
