"""Console output for the CLI: rich tables on stdout, logs and progress on stderr, JSON for scripts.

Everything printed is literal text. Paths, model specs, labels, data specs and hints often hold ``[brackets]``
or ``:colons:``, which rich would read as style tags (a crash on ``[/x]``, silently wrong text on ``[red]``)
or emoji codes. So both consoles have markup and emoji off, live displays render their text as plain
``Text``, and styling is done with ``rich.text.Text`` (see ``print_path``), never with markup strings.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

console = Console(markup=False, emoji=False)
err_console = Console(stderr=True, markup=False, emoji=False)
state = {"quiet": False, "verbose": 0}


def print_json(obj: Any) -> None:
    """Print one JSON object on stdout (plain, no markup)."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


def print_path(before: str, path: str | Path, after: str = "") -> None:
    """Print ``before PATH after`` on stdout, the path in bold and exactly as given.

    The line is never folded by rich (the terminal wraps it), so the path can be copied whole.

    Args:
        before: text before the path, e.g. ``"Saved to "``.
        path: the path (or any user text) to show literally.
        after: text after the path.
    """
    console.print(Text.assemble(before, (str(path), "bold"), after), soft_wrap=True)


def status(message: str):
    """A spinner on stderr for a long step (silent with --quiet); ``message`` is shown literally."""
    import contextlib

    if state["quiet"] or not err_console.is_terminal:
        return contextlib.nullcontext()
    return err_console.status(Text(message))


def human(n: int) -> str:
    """Parameter counts as 134.5M / 6.74B."""
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.{2 if unit == 'B' else 1}f}{unit}"
    return str(n)


def plain_column(template: str = "{task.description}"):
    """A progress-bar text column that shows its text literally (no markup, no emoji codes)."""
    from rich.progress import TextColumn

    return TextColumn(template, markup=False)


def progress_bar(description: str):
    """A rich progress bar on stderr; yields a ``(done, total)`` callback. Silent with --quiet.

    ``description`` is shown literally.
    """
    import contextlib

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

    @contextlib.contextmanager
    def bar():
        if state["quiet"]:
            yield lambda done, total: None
            return
        with Progress(plain_column(), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TimeRemainingColumn(), console=err_console, transient=True) as progress:
            task = progress.add_task(description, total=None)
            yield lambda done, total: progress.update(task, completed=done, total=total)

    return bar()
