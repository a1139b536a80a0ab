"""Console output for the CLI: rich tables on stdout, logs and progress on stderr, JSON for scripts.

Everything printed is literal text. Paths, model specs, labels, data specs and hints often hold ``[brackets]``
or ``:colons:``, which rich would read as style tags (a crash on ``[/x]``, silently wrong text on ``[red]``)
or emoji codes. So both consoles have markup and emoji off, live displays render their text as plain
``Text``, and styling is done with ``rich.text.Text`` (see ``print_path``), never with markup strings.

Progress lives here too, in one :class:`Activity` per verb: what the verb is doing now (its *phase*), with
done/total, rate and ETA where the work is counted. On a terminal that is one transient rich bar. When stderr
is not a terminal (CI, nohup, a batch job) it is a plain line at least every ``$SHORTLLM_HEARTBEAT_S`` seconds
(10) while a phase runs, and a closing line for a phase that was reported; a run shorter than that prints
nothing. Core code names its phases with ordinary log records, ``log.info("Loading the model %s", spec,
extra={"phase": True})``, which :class:`PhaseHandler` forwards to the running activity whatever the verbosity.
``--quiet`` silences all of it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from shortllm.wording import duration

console = Console(markup=False, emoji=False)
err_console = Console(stderr=True, markup=False, emoji=False)
state = {"quiet": False, "verbose": 0}

HEARTBEAT_ENV = "SHORTLLM_HEARTBEAT_S"
DEFAULT_HEARTBEAT_S = 10.0


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


def heartbeat_seconds() -> float:
    """Seconds between plain progress lines when stderr is not a terminal: ``$SHORTLLM_HEARTBEAT_S`` or 10."""
    try:
        value = float(os.environ.get(HEARTBEAT_ENV) or DEFAULT_HEARTBEAT_S)
    except ValueError:
        return DEFAULT_HEARTBEAT_S
    return value if value > 0 else DEFAULT_HEARTBEAT_S


@dataclass
class _Phase:
    """One named step of a verb, with its counts once the work reports them."""

    name: str
    started: float
    done: int | None = None
    total: int | None = None
    unit: str = ""
    info: str = ""
    base: tuple[float, int] | None = None  # (time, done) the rate is measured from
    seconds_per_item: float | None = None  # the caller's own measurement, preferred to ours
    updated: float | None = None  # when the counts last changed
    reported: bool = False  # a plain line named it (so its end gets one too)

    def per_item(self) -> float | None:
        """Seconds per unit of work: the caller's figure, else measured from ``base`` to the last update."""
        if self.seconds_per_item:
            return self.seconds_per_item
        if self.done is None or self.base is None or self.updated is None or self.done <= self.base[1]:
            return None
        return (self.updated - self.base[0]) / (self.done - self.base[1]) or None

    def eta(self, now: float) -> float | None:
        """Seconds left: the units still to do at the measured rate, less the time since the last update."""
        per = self.per_item()
        if per is None or not self.total or self.done is None or self.done >= self.total or self.updated is None:
            return None
        return max(per * (self.total - self.done) - (now - self.updated), 0.0)

    def counts(self) -> str:
        if self.done is None:
            return ""
        counted = f"{self.done}/{self.total}" if self.total else str(self.done)
        return f"{self.unit} {counted}" if self.unit else counted

    def detail(self, now: float, with_elapsed: bool = False) -> str:
        """Counts, rate, ETA (and, for a plain line, the time so far), then the note: what a line or the bar shows."""
        parts = [self.counts()] if self.done is not None else []
        per, unit, eta = self.per_item(), self.unit or "it", self.eta(now)
        if per:
            parts.append(f"{per:.3g} s/{unit}" if per >= 1 else f"{1 / per:.3g} {unit}/s")
        if eta is not None:
            parts.append(f"ETA {duration(eta)}")
        if with_elapsed:
            parts.append(f"{duration(now - self.started)} so far")
        return "; ".join(filter(None, [", ".join(parts), self.info]))


class Activity:
    """What the running verb is doing, shown on stderr; one per verb, made by :func:`activity`.

    ``mode`` is ``"terminal"`` (a transient rich bar), ``"lines"`` (plain lines from a timer thread) or
    ``"off"`` (``--quiet``, or a non-main process of a distributed run): the methods are the same in all three.
    """

    def __init__(self, name: str, mode: str, interval: float | None = None) -> None:
        self.name, self.mode = name, mode
        self.interval = interval or heartbeat_seconds()
        self._lock = threading.RLock()
        now = time.monotonic()
        self._phase = _Phase(name, now, base=(now, 0))
        self._progress: Any = None
        self._task: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- life cycle -------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the display: the rich bar on a terminal, the heartbeat thread otherwise."""
        if self.mode == "terminal":
            from rich.progress import BarColumn, Progress, TimeElapsedColumn

            self._progress = Progress(plain_column(), BarColumn(), plain_column("{task.fields[detail]}"),
                                      TimeElapsedColumn(), console=err_console, transient=True)
            self._task = self._progress.add_task(self._phase.name, total=None, detail="")
            self._progress.start()
        elif self.mode == "lines":
            self._thread = threading.Thread(target=self._beat, name="shortllm-heartbeat", daemon=True)
            self._thread.start()

    def stop(self, failed: bool = False) -> None:
        """Stop the display. The closing line of a reported phase comes first, unless that phase ``failed``."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        if not failed:
            with self._lock:
                self._close_phase()
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    # -- what the verb reports --------------------------------------------------------------------------------
    def phase(self, name: str) -> None:
        """Begin a new phase called ``name`` (the previous one ends)."""
        with self._lock:
            self._close_phase()
            now = time.monotonic()
            self._phase = _Phase(name, now, base=(now, 0))
            if self._progress is not None:
                self._progress.reset(self._task, total=None, completed=0, description=name, detail="")

    def update(self, done: int, total: int | None, *, name: str | None = None, unit: str = "", info: str = "",
               seconds_per_item: float | None = None) -> None:
        """Record progress of the current phase (or first switch to phase ``name``, counting from ``done``).

        Args:
            done, total: work done so far and in all (total None when unknown).
            name: the phase these counts belong to; None: the current one.
            unit: what is counted (``"step"``), shown before the counts and in the rate.
            info: a short note shown after them (loss, the model being timed, ...).
            seconds_per_item: the caller's own measured time per unit, preferred to the rate seen here.
        """
        with self._lock:
            if name is not None and name != self._phase.name:
                self.phase(name)
                self._phase.base = (time.monotonic(), done)  # its earlier units were not timed here
            p = self._phase
            p.done, p.total, p.unit, p.info, p.seconds_per_item = done, total, unit, info, seconds_per_item
            p.updated = time.monotonic()
            if self._progress is not None:
                self._progress.update(self._task, completed=done, total=total,
                                      detail=p.detail(time.monotonic()))

    def counter(self, name: str | None = None, unit: str = "") -> Callable[[int, int], None]:
        """A ``(done, total)`` callback for core code, counting in phase ``name`` (None: the current phase).

        Counts go to the phase current when they come, once a phase has begun since the counter was made (the
        core names its phases with log records, and a job's later stages, such as a replacement's fit after
        scoring, or each source of the auto search, count under their own); a first count that comes while the
        phase is still the one current at the counter's creation opens phase ``name``.
        """
        made_in = self._phase

        def count(done: int, total: int) -> None:
            with self._lock:
                self.update(done, total, name=name if self._phase is made_in else None, unit=unit)

        return count

    def note(self, text: str) -> None:
        """Print one lasting line on stderr (above the bar on a terminal); nothing when the display is off."""
        if self.mode == "terminal" and self._progress is not None:
            self._progress.console.print(Text(text), soft_wrap=True)
        elif self.mode in ("terminal", "lines"):
            self._write(text)

    # -- plain lines ----------------------------------------------------------------------------------------
    def status_line(self) -> str:
        """The current phase as one line: name, counts, rate, ETA, time so far."""
        with self._lock:
            return f"{self._phase.name}: {self._phase.detail(time.monotonic(), with_elapsed=True)}"

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                line = self.status_line()
                self._phase.reported = True
                self._write(line)

    def _close_phase(self) -> None:
        p = self._phase
        if self.mode == "lines" and p.reported:
            counts = f" ({p.counts()})" if p.done is not None else ""
            self._write(f"{p.name}: done{counts} in {duration(time.monotonic() - p.started)}")
            p.reported = False

    @staticmethod
    def _write(line: str) -> None:
        err_console.print(Text(f"{time.strftime('%H:%M:%S')} {line}"), soft_wrap=True, highlight=False)


_current: Activity | None = None


def _display_mode() -> str:
    if state["quiet"] or os.environ.get("RANK", "0") != "0":  # one display per distributed run, not one per rank
        return "off"
    return "terminal" if err_console.is_terminal else "lines"


@contextlib.contextmanager
def activity(name: str) -> Iterator[Activity]:
    """Show what a verb does on stderr while the block runs; yields the :class:`Activity`.

    Inside another activity this only starts a phase ``name`` in it, and returns it to the outer name on exit.
    """
    global _current
    outer = _current
    if outer is not None:
        outer.phase(name)
        yield outer  # an error propagates from here: the failed phase is not reported done
        outer.phase(outer.name)
        return
    act = Activity(name, _display_mode())
    _current = act
    act.start()
    try:
        yield act
    except BaseException:
        act.stop(failed=True)
        raise
    else:
        act.stop()
    finally:
        _current = None


def status(message: str) -> contextlib.AbstractContextManager[Activity]:
    """A long step without counts, on stderr (spinner / plain heartbeat lines; silent with --quiet).

    ``message`` is shown literally.
    """
    return activity(message)


@contextlib.contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """A counted step on stderr; yields its ``(done, total)`` callback. Silent with --quiet.

    A rich bar on a terminal, plain lines with done/total, rate and ETA otherwise. ``description`` is shown
    literally.
    """
    with activity(description) as act:
        yield act.counter()


class PhaseHandler(logging.Handler):
    """Forwards log records made with ``extra={"phase": True}`` to the running activity as its new phase."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)

    def emit(self, record: logging.LogRecord) -> None:
        act = _current
        if act is not None and getattr(record, "phase", False):
            try:
                act.phase(record.getMessage())
            except Exception:  # a display problem must never stop the work
                self.handleError(record)
