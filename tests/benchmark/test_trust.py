"""When a bench result is flagged unreliable, and why: spreads, paired speedups and machine notes on
hand-built timings; the machine's sensors read from a fake /sys and /proc."""

import pytest

from shortllm.benchmark import machine
from shortllm.benchmark.trust import (Thresholds, assess, flag_line, machine_notes, paired_ratios,
                                      relative_spread, row_problems, summary)

TIGHT = {"prefill_s": [0.30, 0.31, 0.29, 0.30, 0.30], "decode_tokens_per_s": [12.0, 12.3, 11.8, 12.1, 12.0],
         "latency_s": [11.0, 11.2, 10.9, 11.1, 11.0], "throughput_tokens_per_s": [11.6, 11.4, 11.7, 11.5, 11.6]}
IDEAL = 1.227


def quiet(**speedups):
    """Raw figures of a result with tight timings, plus the given paired speedups."""
    return TIGHT | speedups


def sample(load=None, mhz=None, temp=None, throttles=None):
    return {"when": "", "load_average": load, "cpu_mhz": mhz, "temperature_c": temp,
            "thermal_throttle_count": throttles}


def test_relative_spread():
    assert relative_spread([10.0, 12.0, 11.0]) == pytest.approx(2 / 11)
    assert relative_spread([5.0]) == 0
    assert relative_spread([None, 4.0, 2.0]) == pytest.approx(2 / 3)
    assert relative_spread([None]) is None and relative_spread([]) is None
    assert relative_spread([0.0, 0.0, 0.0]) is None


def test_paired_ratios():
    assert paired_ratios([12.0, 6.0], [10.0, 5.0]) == pytest.approx([1.2, 1.2])  # rates: higher is better
    assert paired_ratios([0.5, 2.0], [1.0, 1.0], higher_is_better=False) == [2.0, 0.5]  # times: lower is better
    assert paired_ratios([None, 1.0], [1.0, 0.0]) == [None, None]
    with pytest.raises(ValueError):
        paired_ratios([1.0, 2.0], [1.0])


def test_quiet_result_is_trusted():
    raw = quiet(speedup=[1.20, 1.21, 1.19, 1.22, 1.20])
    assert row_problems(raw, 5, IDEAL, is_base=False) == []
    assert assess(raw, 5, 2, IDEAL, False, ["load average 4.5 -> 4.8 on 2 usable CPUs: ..."]) == {
        "trusted": True, "reasons": [], "likely_causes": []}  # a busy machine alone does not condemn a result


def test_busy_cpu_speedups_from_x0_85_to_x2_38_are_flagged():
    # A busy CPU's medians: x0.85 and x2.38 against an ideal of x1.23, which would read as plain results.
    raw = quiet(speedup=[0.85, 2.38, 1.10, 1.30, 0.95],
                decode_tokens_per_s=[1.91, 1.47, 2.10, 1.95, 1.90])
    verdict = assess(raw, 5, 2, IDEAL, False, ["load average 2.5 -> 5.4, up to 9.0 on 2 usable CPUs: other "
                                                "processes competed for the cores"])
    assert verdict["trusted"] is False
    assert verdict["reasons"] == [
        "repeats vary by more than 20% of the median: decode tok/s 33% (1.5..2.1), decode speedup 139% "
        "(x0.85..x2.38)",
        "decode speedup x0.85..x2.38 spans both x1 (no gain) and the ideal x1.23: this run cannot tell them apart",
    ]
    assert verdict["likely_causes"] == ["load average 2.5 -> 5.4, up to 9.0 on 2 usable CPUs: other processes "
                                        "competed for the cores"]


def test_speedup_far_above_the_ideal_is_flagged_even_when_tight():
    raw = quiet(speedup=[1.45, 1.47, 1.48, 1.46, 1.47])
    assert row_problems(raw, 5, IDEAL, is_base=False) == [
        "median decode speedup x1.47 is 20% above the ideal x1.23 that the FLOPs allow: the models did not run "
        "under the same conditions"]
    assert row_problems(quiet(speedup=[1.33] * 5), 5, IDEAL, is_base=False) == []  # 8% above: within 10%


def test_a_tight_no_gain_result_is_an_honest_answer():
    # x0.98..x1.01 includes x1 but not the ideal: the run clearly says "no gain", which is a result
    assert row_problems(quiet(speedup=[0.98, 1.01, 0.99, 1.00, 0.99]), 5, IDEAL, is_base=False) == []


def test_same_model_twice_is_not_flagged_for_spanning_x1():
    assert row_problems(quiet(speedup=[0.97, 1.03, 1.0, 1.01, 0.99]), 5, 1.0, is_base=False) == []


def test_the_first_model_speedups_are_not_checked():
    raw = quiet(speedup=[0.5, 2.0, 1.0])
    assert row_problems(raw, 5, 1.0, is_base=True) == []


@pytest.mark.parametrize("repeats, reason", [
    (1, "only 1 repeat: at least 3 are needed to see the spread"),
    (2, "only 2 repeats: at least 3 are needed to see the spread")])
def test_too_few_repeats(repeats, reason):
    raw = {k: v[:repeats] for k, v in TIGHT.items()}
    assert row_problems(raw, repeats, IDEAL, is_base=True) == [reason]
    assert row_problems(raw, repeats, IDEAL, is_base=True, th=Thresholds(min_repeats=1)) == []


def test_threshold_is_adjustable():
    raw = quiet(decode_tokens_per_s=[10.0, 11.0, 12.0, 11.0, 11.5])  # (12 - 10) / 11 = 18%
    assert row_problems(raw, 5, IDEAL, is_base=True) == []
    assert row_problems(raw, 5, IDEAL, is_base=True, th=Thresholds(max_spread=0.1)) == [
        "repeats vary by more than 10% of the median: decode tok/s 18% (10.0..12.0)"]


def test_machine_notes():
    assert machine_notes([sample(load=[1.2, 1, 1]), sample(load=[1.9, 1, 1])], cpus=2) == []
    assert machine_notes([sample(load=[4.5, 4, 3]), sample(load=[9.1, 5, 3]), sample(load=[4.8, 5, 4])],
                         cpus=2) == ["load average 4.5 -> 4.8, up to 9.1 on 2 usable CPUs: other processes "
                                     "competed for the cores"]
    assert machine_notes([sample(load=[1.5, 1, 1])], cpus=1) == [
        "load average 1.5 -> 1.5 on 1 usable CPU: other processes competed for the cores"]
    assert machine_notes([sample(mhz=[3400.0, 3400.0]), sample(mhz=[1200.0, 3400.0])], cpus=2) == [
        "CPU clock ranged 1200..3400 MHz (frequency scaling or thermal throttling)"]
    assert machine_notes([sample(mhz=[3300.0, 3400.0])], cpus=2) == []  # 3% apart
    assert machine_notes([sample(throttles=10, temp=70.0), sample(throttles=13, temp=95.0)], cpus=2) == [
        "the CPU throttled 3 times for heat", "temperature reached 95 C"]
    assert machine_notes([sample(throttles=10), sample(throttles=11)], cpus=2) == ["the CPU throttled 1 time for heat"]
    assert machine_notes([sample(), sample()], cpus=None) == []  # nothing readable: nothing to say


def test_assess_names_the_missing_warmup_as_a_cause():
    raw = quiet(decode_tokens_per_s=[5.0, 12.0, 12.1, 11.9, 12.0])
    verdict = assess(raw, 5, 0, IDEAL, True, [])
    assert verdict["reasons"] == ["repeats vary by more than 20% of the median: decode tok/s 59% (5.0..12.1)"]
    assert verdict["likely_causes"] == ["no warm-up run (--warmup 0): the first repeat pays one-time setup costs"]


def test_flag_line_and_summary():
    good = {"model": "a", "batch_size": 1, "prompt_len": 64, "new_tokens": 128,
            "trust": {"trusted": True, "reasons": [], "likely_causes": []}}
    bad = good | {"model": "b", "batch_size": 8,
                  "trust": {"trusted": False, "reasons": ["r1", "r2"], "likely_causes": ["c1"]}}
    assert flag_line(bad) == "UNRELIABLE: b at batch 8, prompt 64, 128 new: r1; r2. Likely causes: c1."
    out = summary([good, bad], ["m1"], 5)
    assert out["trusted"] is False and out["unreliable"] == 1 and out["flags"] == [flag_line(bad)]
    assert out["machine"] == ["m1"] and out["thresholds"]["max_spread"] == 0.2
    assert out["verdict"] == ("Unreliable results: 1 of 2. Rerun on an idle machine, with more --repeats or "
                              "with --threads 1 (or as many threads as idle cores) on a shared CPU.")
    assert summary([bad], [], 5, threads=1)["verdict"] == (
        "Unreliable results: 1 of 1. Rerun on an idle machine or with more --repeats.")  # already one thread
    out = summary([good], [], 5)
    assert out["trusted"] is True and out["flags"] == []
    assert out["verdict"] == "No result flagged: every figure within 20% of its median over 5 repeats."


# ----------------------------------------------------------------------------------------------- sensors

@pytest.fixture
def fake_system(tmp_path, monkeypatch):
    cpu, thermal, cpuinfo = tmp_path / "cpu", tmp_path / "thermal", tmp_path / "cpuinfo"
    cpu.mkdir()
    thermal.mkdir()
    monkeypatch.setattr(machine, "SYS_CPU", cpu)
    monkeypatch.setattr(machine, "SYS_THERMAL", thermal)
    monkeypatch.setattr(machine, "PROC_CPUINFO", cpuinfo)
    return cpu, thermal, cpuinfo


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_sensors_read_cpufreq_thermal_zones_and_throttle_counts(fake_system):
    cpu, thermal, cpuinfo = fake_system
    _write(cpuinfo, "processor\t: 0\ncpu MHz\t\t: 2445.406\n")
    _write(cpu / "cpu0/cpufreq/scaling_cur_freq", "1200000\n")
    _write(cpu / "cpu1/cpufreq/scaling_cur_freq", "3400000\n")
    _write(cpu / "cpu0/thermal_throttle/core_throttle_count", "4\n")
    _write(cpu / "cpu1/thermal_throttle/core_throttle_count", "5\n")
    _write(thermal / "thermal_zone0/temp", "45000\n")
    _write(thermal / "thermal_zone1/temp", "71500\n")
    got = machine.sample("before batch 1")
    assert got["when"] == "before batch 1"
    assert got["cpu_mhz"] == [1200.0, 3400.0]  # cpufreq wins over /proc/cpuinfo
    assert got["temperature_c"] == 71.5 and got["thermal_throttle_count"] == 9
    assert got["load_average"] is None or len(got["load_average"]) == 3


def test_sensors_fall_back_to_cpuinfo_and_to_none(fake_system):
    cpu, thermal, cpuinfo = fake_system
    _write(cpuinfo, "processor\t: 0\ncpu MHz\t\t: 2445.406\nprocessor\t: 1\ncpu MHz\t\t: 2000.000\n")
    assert machine.cpu_mhz() == [2000.0, 2445.406]
    cpuinfo.unlink()
    assert machine.cpu_mhz() is None and machine.temperature_c() is None
    assert machine.thermal_throttle_count() is None
