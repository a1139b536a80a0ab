"""Can a bench result be trusted? Paired speedups, spreads and flags: pure arithmetic on the repeats.

A median alone hides how much the repeats disagreed. Every figure therefore carries its min and max and its
relative spread, ``(max - min) / median``; speedups are computed pair by pair (repeat k of a model against
repeat k of the first model, run back to back, so load that hits one hits both) and reported as the
median of the pairs with their min..max.

A result is flagged *unreliable* when
- it has fewer than ``min_repeats`` repeats (one or two runs cannot show a spread),
- a figure's spread is above ``max_spread``,
- its decode speedup range spans both x1 (no gain) and the FLOPs ideal, so the run cannot tell them apart, or
- its median decode speedup is more than ``beyond_ideal`` above the ideal (fewer FLOPs cannot do that; the
  two models did not see the same machine).
A flag names each reason, and adds what the machine reported while the point ran (load average above the
usable CPUs, the CPU clock changing, thermal throttling, no warm-up) as likely causes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from shortllm.benchmark.flops import ratio
from shortllm.wording import plural

TIMED = ("prefill_s", "decode_tokens_per_s", "latency_s", "throughput_tokens_per_s")
SPEEDUPS = ("speedup", "latency_speedup", "prefill_speedup")
# metric of each speedup, and whether a higher value of it is better
SPEEDUP_OF = {"speedup": ("decode_tokens_per_s", True), "latency_speedup": ("latency_s", False),
              "prefill_speedup": ("prefill_s", False)}
NAMES = {"prefill_s": "time to first token", "decode_tokens_per_s": "decode tok/s", "latency_s": "latency",
         "throughput_tokens_per_s": "total tok/s", "speedup": "decode speedup",
         "latency_speedup": "latency speedup", "prefill_speedup": "first-token speedup"}


@dataclass(frozen=True)
class Thresholds:
    """When a result stops being trustworthy (fractions, not percentages)."""

    max_spread: float = 0.20  # (max - min) / median of a figure's repeats
    min_repeats: int = 3
    beyond_ideal: float = 0.10  # median decode speedup above ideal x (1 + this)
    clock_change: float = 0.10  # CPU clock (max - min) / max during a point
    hot_celsius: float = 90.0

    def as_dict(self) -> dict[str, Any]:
        """The thresholds as a JSON-ready dict."""
        return asdict(self)


def relative_spread(values: Sequence[float | None]) -> float | None:
    """``(max - min) / median`` of the known values (None entries skipped); None if nothing or median 0."""
    import statistics

    known = [v for v in values if v is not None]
    if not known:
        return None
    median = statistics.median(known)
    return None if median == 0 else (max(known) - min(known)) / abs(median)


def paired_ratios(values: Sequence[float | None], base: Sequence[float | None],
                  higher_is_better: bool = True) -> list[float | None]:
    """Speedup of each repeat over the base model's repeat of the same index (None where unknown).

    Repeat k of two models ran back to back, so a load change between repeats scales both and cancels here.

    Raises:
        ValueError: if the two lists differ in length.
    """
    return [ratio(v, b, higher_is_better) for v, b in zip(values, base, strict=True)]


def _span(figure: str, lo: float, hi: float) -> str:
    """``lo..hi`` of a figure in its display unit: "100..300 ms", "x0.85..x2.38", "1.7..5.0"."""
    if figure in SPEEDUPS:
        return f"x{lo:.2f}..x{hi:.2f}"
    if figure == "prefill_s":
        return f"{lo * 1000:.0f}..{hi * 1000:.0f} ms"
    if figure == "latency_s":
        return f"{lo:.2f}..{hi:.2f} s"
    return f"{lo:.1f}..{hi:.1f}"


def row_problems(raw: Mapping[str, Sequence[float | None]], repeats: int, ideal: float | None,
                 is_base: bool, th: Thresholds = Thresholds()) -> list[str]:
    """Why one result (one model at one sweep point) cannot be trusted; empty if it can.

    Args:
        raw: every repeat of each figure (``TIMED``, plus ``SPEEDUPS`` as paired ratios unless ``is_base``).
        repeats: the number of timed repeats.
        ideal: the FLOPs-ideal decode speedup over the first model.
        is_base: the first model (its speedups are 1 by definition and are not checked).
        th: the thresholds.

    Returns:
        One sentence per problem, most basic first.
    """
    problems = []
    if repeats < th.min_repeats:
        problems.append(f"only {plural(repeats, 'repeat')}: at least {th.min_repeats} are needed to see the "
                        "spread")
    wide = []
    for figure in TIMED + (() if is_base else SPEEDUPS):
        values = [v for v in raw.get(figure, []) if v is not None]
        s = relative_spread(values)
        if s is not None and s > th.max_spread:
            wide.append(f"{NAMES[figure]} {s:.0%} ({_span(figure, min(values), max(values))})")
    if wide:
        problems.append(f"repeats vary by more than {th.max_spread:.0%} of the median: " + ", ".join(wide))
    speedups = [v for v in raw.get("speedup", []) if v is not None]
    if not is_base and speedups and ideal is not None and abs(ideal - 1) > 1e-9:
        import statistics

        lo, hi, median = min(speedups), max(speedups), statistics.median(speedups)
        if lo <= min(1.0, ideal) and hi >= max(1.0, ideal):
            problems.append(f"decode speedup x{lo:.2f}..x{hi:.2f} spans both x1 (no gain) and the ideal "
                            f"x{ideal:.2f}: this run cannot tell them apart")
        if median > ideal * (1 + th.beyond_ideal):
            problems.append(f"median decode speedup x{median:.2f} is {median / ideal - 1:.0%} above the ideal "
                            f"x{ideal:.2f} that the FLOPs allow: the models did not run under the same conditions")
    return problems


def machine_notes(samples: Sequence[Mapping[str, Any]], cpus: int | None,
                  th: Thresholds = Thresholds()) -> list[str]:
    """What the machine's sensors say about a stretch of the run (see ``benchmark/machine.py``).

    Args:
        samples: sensor readings in time order (keys ``load_average``, ``cpu_mhz``, ``temperature_c``,
            ``thermal_throttle_count``; any may be None where unreadable).
        cpus: CPUs usable by this process.
        th: the thresholds.

    Returns:
        One sentence per condition that can disturb timings: a load average above ``cpus``, the CPU clock
        changing by more than ``clock_change``, thermal throttling, a temperature at or above ``hot_celsius``.
    """
    notes = []
    loads = [s["load_average"][0] for s in samples if s.get("load_average")]
    if loads and cpus and max(loads) > cpus:
        path = " -> ".join(f"{v:.1f}" for v in (loads[0], loads[-1]))
        peak = f", up to {max(loads):.1f}" if max(loads) > max(loads[0], loads[-1]) else ""
        notes.append(f"load average {path}{peak} on {plural(cpus, 'usable CPU')}: other processes competed "
                     "for the cores")
    clocks = [v for s in samples if s.get("cpu_mhz") for v in s["cpu_mhz"]]
    if clocks and max(clocks) > 0 and (max(clocks) - min(clocks)) / max(clocks) > th.clock_change:
        notes.append(f"CPU clock ranged {min(clocks):.0f}..{max(clocks):.0f} MHz (frequency scaling or "
                     "thermal throttling)")
    throttles = [s["thermal_throttle_count"] for s in samples if s.get("thermal_throttle_count") is not None]
    if len(throttles) >= 2 and throttles[-1] > throttles[0]:
        notes.append(f"the CPU throttled {plural(throttles[-1] - throttles[0], 'time')} for heat")
    temps = [s["temperature_c"] for s in samples if s.get("temperature_c") is not None]
    if temps and max(temps) >= th.hot_celsius:
        notes.append(f"temperature reached {max(temps):.0f} C")
    return notes


def assess(raw: Mapping[str, Sequence[float | None]], repeats: int, warmup: int, ideal: float | None,
           is_base: bool, notes: Sequence[str], th: Thresholds = Thresholds()) -> dict[str, Any]:
    """The verdict on one result: ``{"trusted", "reasons", "likely_causes"}``.

    ``likely_causes`` (only when not trusted) are ``notes`` (the machine during the point, from
    :func:`machine_notes`) and, with ``warmup == 0``, the missing warm-up.
    """
    reasons = row_problems(raw, repeats, ideal, is_base, th)
    causes: list[str] = []
    if reasons:
        causes = list(notes)
        if warmup == 0:
            causes.append("no warm-up run (--warmup 0): the first repeat pays one-time setup costs")
    return {"trusted": not reasons, "reasons": reasons, "likely_causes": causes}


def flag_line(row: Mapping[str, Any]) -> str:
    """The one-line flag of an untrusted result row (which has a ``trust`` verdict from :func:`assess`)."""
    where = f"batch {row['batch_size']}, prompt {row['prompt_len']}, {row['new_tokens']} new"
    line = f"UNRELIABLE: {row['model']} at {where}: " + "; ".join(row["trust"]["reasons"])
    if row["trust"]["likely_causes"]:
        line += ". Likely causes: " + "; ".join(row["trust"]["likely_causes"])
    return line + "."


def summary(rows: Sequence[Mapping[str, Any]], run_notes: Sequence[str], repeats: int,
            th: Thresholds = Thresholds(), threads: int | None = None) -> dict[str, Any]:
    """The run's verdict: ``trusted``, ``unreliable`` (count), ``flags`` (one line per untrusted result),
    ``verdict`` (one line for all, with what to do; ``threads`` = the torch threads the run used),
    ``machine`` (``run_notes``) and the ``thresholds``."""
    flags = [flag_line(r) for r in rows if not r["trust"]["trusted"]]
    if flags:
        fixes = ["on an idle machine", "with more --repeats"]
        if threads != 1:
            fixes.append("with --threads 1 (or as many threads as idle cores) on a shared CPU")
        verdict = (f"Unreliable results: {len(flags)} of {len(rows)}. Rerun " + ", ".join(fixes[:-1])
                   + f" or {fixes[-1]}.")
    else:
        verdict = (f"No result flagged: every figure within {th.max_spread:.0%} of its median over "
                   f"{plural(repeats, 'repeat')}.")
    return {"trusted": not flags, "unreliable": len(flags), "flags": flags, "verdict": verdict,
            "machine": list(run_notes), "thresholds": th.as_dict()}
