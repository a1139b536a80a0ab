"""What every plot shares: labels and titles drawn as the literal text they hold."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def literal_text(fn: F) -> F:
    """Run a plotting function with matplotlib's math text off.

    Model labels, paths and data specs go into titles and legends; with math text on, a ``$`` in them is drawn
    as a formula and ``$\\x$`` makes the save fail (``ValueError: Unknown symbol``).
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import matplotlib

        with matplotlib.rc_context({"text.parse_math": False}):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
