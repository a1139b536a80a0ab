"""Console output for the CLI: rich tables on stdout, logs and progress on stderr, JSON for scripts."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

console = Console()
err_console = Console(stderr=True)
state = {"quiet": False, "verbose": 0}


def print_json(obj: Any) -> None:
    """Print one JSON object on stdout (plain, no markup)."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


def status(message: str):
    """A spinner on stderr for a long step (silent with --quiet)."""
    import contextlib

    if state["quiet"] or not err_console.is_terminal:
        return contextlib.nullcontext()
    return err_console.status(message)


def human(n: int) -> str:
    """Parameter counts as 134.5M / 6.74B."""
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.{2 if unit == 'B' else 1}f}{unit}"
    return str(n)


def progress_bar(description: str):
    """A rich progress bar on stderr; yields a ``(done, total)`` callback. Silent with --quiet."""
    import contextlib

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    @contextlib.contextmanager
    def bar():
        if state["quiet"]:
            yield lambda done, total: None
            return
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TimeRemainingColumn(), console=err_console, transient=True) as progress:
            task = progress.add_task(description, total=None)
            yield lambda done, total: progress.update(task, completed=done, total=total)

    return bar()
