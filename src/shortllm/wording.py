"""Small helpers for the words shortllm prints: counts with the right noun form."""

from __future__ import annotations


def plural(count: int | float, noun: str, many: str | None = None, *, thousands: bool = False) -> str:
    """``count`` followed by ``noun`` in the form that agrees with it: "1 token", "0 tokens", "2 blocks".

    Args:
        count: how many.
        noun: the singular noun, e.g. ``"token"``.
        many: the plural when it is not ``noun + "s"``, e.g. ``"processes"``.
        thousands: write the count with thousands separators (``1,024 tokens``).

    Returns:
        The count and the noun, e.g. ``"1 token"``.
    """
    number = f"{count:,}" if thousands else f"{count}"
    return f"{number} {noun if count == 1 else many or noun + 's'}"


__all__ = ["duration", "plural"]


def duration(seconds: float) -> str:
    """A duration for people: ``0.0421s``, ``4.27s``, ``42s``, ``7m40s``, ``2h33m``."""
    if seconds < 9.995:
        return f"{seconds:.3g}s"
    if seconds < 59.5:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
