"""What the machine is doing while bench runs: load average, CPU clock, temperature, thermal throttling.

Each reading is taken where the system exposes it and is None where it does not (a VM often has no cpufreq
or thermal zones; a non-Linux system has none of these files). Reading them costs well under a millisecond,
and it is done only between sweep points, never inside a timed run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

SYS_CPU = Path("/sys/devices/system/cpu")
SYS_THERMAL = Path("/sys/class/thermal")
PROC_CPUINFO = Path("/proc/cpuinfo")


def _read_numbers(paths) -> list[float]:
    out = []
    for path in paths:
        try:
            out.append(float(path.read_text().split()[0]))
        except (OSError, ValueError, IndexError):
            continue
    return out


def cpu_mhz() -> list[float] | None:
    """[lowest, highest] current clock over the CPUs in MHz: cpufreq's ``scaling_cur_freq``, else
    ``/proc/cpuinfo``'s "cpu MHz"; None where neither is readable."""
    khz = _read_numbers(sorted(SYS_CPU.glob("cpu[0-9]*/cpufreq/scaling_cur_freq")))
    mhz = [v / 1000 for v in khz]
    if not mhz:
        try:
            lines = PROC_CPUINFO.read_text().splitlines()
        except OSError:
            lines = []
        for line in lines:
            key, _, value = line.partition(":")
            if key.strip() == "cpu MHz":
                try:
                    mhz.append(float(value))
                except ValueError:
                    continue
    return [min(mhz), max(mhz)] if mhz else None


def temperature_c() -> float | None:
    """Highest reading of the thermal zones in degrees Celsius, or None."""
    milli = _read_numbers(sorted(SYS_THERMAL.glob("thermal_zone*/temp")))
    return max(milli) / 1000 if milli else None


def thermal_throttle_count() -> int | None:
    """Total thermal throttling events of the CPU cores since boot (x86 ``thermal_throttle``), or None."""
    counts = _read_numbers(sorted(SYS_CPU.glob("cpu[0-9]*/thermal_throttle/core_throttle_count")))
    return int(sum(counts)) if counts else None


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, or None where the system has none."""
    try:
        return list(os.getloadavg())
    except (AttributeError, OSError):
        return None


def sample(when: str) -> dict[str, Any]:
    """One reading of every sensor, labelled ``when`` (e.g. "before batch 8, prompt 64, 128 new")."""
    return {"when": when, "load_average": load_average(), "cpu_mhz": cpu_mhz(),
            "temperature_c": temperature_c(), "thermal_throttle_count": thermal_throttle_count()}


def usable_cpus() -> int | None:
    """CPUs this process may run on (its affinity mask where the system has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count()
