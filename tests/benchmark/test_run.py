"""The bench sweep on tiny models: every field, forced lengths, interleaving, paired speedups, flags, bad sweeps."""

import statistics

import pytest

from shortllm.benchmark import machine, timing
from shortllm.benchmark.flops import flops_per_token
from shortllm.benchmark.request import BenchRequest, check_sweep_context, interleaved_order, labels_for, parse_sizes
from shortllm.benchmark.result import FIGURES, flops_shape
from shortllm.benchmark.run import run_bench
from shortllm.errors import BenchSettingsError
from shortllm.models.loading import LoadSettings
from shortllm.models.surgery import drop_blocks
from tests.benchmark.fake_timing import fake_generate
from tests.tiny_models import tiny_config, tiny_model

FIELDS = {"model", "batch_size", "prompt_len", "new_tokens", "prefill_s", "decode_tokens_per_s", "latency_s",
          "throughput_tokens_per_s", "peak_memory_bytes", "memory_kind", "ideal_speedup", "speedup",
          "efficiency"}
CPU = LoadSettings(device="cpu")


@pytest.fixture(scope="module")
def two_block_dir(tmp_path_factory):
    """The 4-block tiny llama with blocks 1 and 2 removed (same weights otherwise)."""
    path = tmp_path_factory.mktemp("tiny-llama-short")
    drop_blocks(tiny_model("llama"), [1, 2]).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def report(tiny_llama_dir, two_block_dir):
    calls = []
    req = BenchRequest(models=[str(tiny_llama_dir), str(two_block_dir)], batch_sizes=[1, 3], prompt_lens=[5],
                       new_tokens=[6], warmup=1, repeats=2, settings=CPU)
    result = run_bench(req, progress=lambda done, total, what: calls.append((done, total, what)))
    return result.as_dict(), calls


def test_every_field_for_every_model_and_point(report):
    info, _ = report
    rows = info["results"]
    assert [(r["batch_size"], "short" in r["model"]) for r in rows] == [
        (1, False), (1, True), (3, False), (3, True)]
    for r in rows:
        assert FIELDS <= set(r), FIELDS - set(r)
        assert r["prompt_len"] == 5 and r["new_tokens"] == 6
        assert r["memory_kind"] in ("cpu_peak_rss_growth", "unavailable")
        for key in ("prefill_s", "decode_tokens_per_s", "latency_s", "throughput_tokens_per_s"):
            assert r[key] > 0 and r["min"][key] <= r[key] <= r["max"][key]
            assert len(r["raw"][key]) == 2  # the repeats, warm-up excluded
        for tput, latency in zip(r["raw"]["throughput_tokens_per_s"], r["raw"]["latency_s"], strict=True):
            assert tput == pytest.approx(r["batch_size"] * 6 / latency)
        first = rows[0 if r["batch_size"] == 1 else 2]
        pairs = [a / b for a, b in zip(r["raw"]["decode_tokens_per_s"], first["raw"]["decode_tokens_per_s"],
                                       strict=True)]
        assert r["raw"]["speedup"] == pytest.approx(pairs)  # repeat k against the first model's repeat k
        assert r["speedup"] == pytest.approx(statistics.median(pairs))
        assert (r["min"]["speedup"], r["max"]["speedup"]) == pytest.approx((min(pairs), max(pairs)))
        assert r["efficiency"] == pytest.approx(r["speedup"] / r["ideal_speedup"])
    assert rows[0]["speedup"] == rows[0]["ideal_speedup"] == rows[0]["efficiency"] == 1.0
    assert {"device", "torch_threads", "versions"} <= set(info["environment"])
    assert info["environment"]["device"] == "cpu"


def test_every_figure_has_its_median_min_max_spread_and_repeats(report):
    info, _ = report
    assert set(FIGURES) == {"prefill_s", "decode_tokens_per_s", "latency_s", "throughput_tokens_per_s",
                            "peak_memory_bytes", "speedup", "latency_speedup", "prefill_speedup", "efficiency"}
    for r in info["results"]:
        for f in FIGURES:
            assert f in r and f in r["min"] and f in r["max"] and f in r["spread"], f
            assert len(r["raw"][f]) == 2, f
            values = [v for v in r["raw"][f] if v is not None]
            if values:
                assert r["min"][f] == min(values) and r["max"][f] == max(values)
                assert r[f] == pytest.approx(statistics.median(values))
                if r[f]:
                    assert r["spread"][f] == pytest.approx((max(values) - min(values)) / abs(r[f]))
        assert set(r["trust"]) == {"trusted", "reasons", "likely_causes"}
        assert r["trust"]["trusted"] is False  # two repeats are too few to show a spread
        assert r["trust"]["reasons"][0] == "only 2 repeats: at least 3 are needed to see the spread"
        assert set(r["machine"]) == {"before", "after"}
        assert {"load_average", "cpu_mhz", "temperature_c", "thermal_throttle_count"} <= set(r["machine"]["after"])
    trust = info["trust"]
    assert trust["trusted"] is False and trust["unreliable"] == 4 and len(trust["flags"]) == 4
    assert trust["flags"][0].startswith(f"UNRELIABLE: {info['results'][0]['model']} at batch 1, prompt 5, 6 new: "
                                        "only 2 repeats")
    assert trust["thresholds"]["max_spread"] == 0.2


def test_forced_length_yields_new_tokens_per_row(report):
    info, _ = report
    for r in info["results"]:
        assert r["generated_tokens"] == [6, 6]


def test_ideal_speedup_is_the_flops_ratio(report):
    info, _ = report
    full, short = info["models"]
    assert (full["num_blocks"], short["num_blocks"]) == (4, 2)
    # tiny llama: block = q,o 64x64 + k,v 64x32 + MLP 3 x 64x128 + 2 norms of 64 = 36992; head 128 x 64
    per_block = 2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 128 + 2 * 64
    assert full["shape"]["block_params"] == 4 * per_block and short["shape"]["block_params"] == 2 * per_block
    assert full["shape"]["head_params"] == 128 * 64 and full["shape"]["attn_dim"] == 64
    expected = (2 * (4 * per_block + 8192) + 4 * 64 * 4 * 5) / (2 * (2 * per_block + 8192) + 4 * 64 * 2 * 5)
    assert info["results"][1]["ideal_speedup"] == pytest.approx(expected)


def test_models_alternate_run_by_run(report):
    _, calls = report
    assert [c[0] for c in calls] == list(range(1, 13)) and {c[1] for c in calls} == {12}
    names = ["short" in c[2] for c in calls]
    assert names == [False, True, True, False, False, True] * 2  # A B, B A, A B per point, warm-up included
    assert "warmup" in calls[0][2] and "repeat 2" in calls[-1][2]


def test_interleaved_order():
    assert interleaved_order(2, 4) == [(0, 0), (0, 1), (1, 1), (1, 0), (2, 0), (2, 1), (3, 1), (3, 0)]
    assert interleaved_order(3, 2) == [(0, 0), (0, 1), (0, 2), (1, 2), (1, 1), (1, 0)]
    assert interleaved_order(1, 3) == [(0, 0), (1, 0), (2, 0)]


LOAD = [1.0, 3.0, 1.0, 2.5, 1.0]  # how much slower the machine is at each step (warm-up step 0 included)


@pytest.mark.parametrize("load, trusted", [(LOAD, False), ([1.0] * 5, True)])
def test_load_hits_both_models_and_cancels_in_the_paired_speedup(tiny_llama_dir, two_block_dir, monkeypatch,
                                                                 load, trusted):
    calls = []
    monkeypatch.setattr(timing, "timed_generate", fake_generate(calls, load))
    busy = {"when": "", "load_average": [5.0, 4.0, 3.0], "cpu_mhz": [2400.0, 2400.0], "temperature_c": None,
            "thermal_throttle_count": None}
    monkeypatch.setattr(machine, "sample", lambda when: busy | {"when": when})
    monkeypatch.setattr(machine, "usable_cpus", lambda: 2)
    req = BenchRequest(models=[str(tiny_llama_dir), str(two_block_dir)], batch_sizes=[1], prompt_lens=[5],
                       new_tokens=[6], warmup=1, repeats=4, settings=CPU)
    info = run_bench(req).as_dict()
    assert calls == [4, 2, 2, 4, 4, 2, 2, 4, 4, 2]  # A B, B A, ...: each step's pair runs back to back
    base, short = info["results"]
    assert short["raw"]["speedup"] == pytest.approx([1.25] * 4)  # the load scaled both runs of every pair
    assert [short["speedup"], short["min"]["speedup"], short["max"]["speedup"]] == pytest.approx([1.25] * 3)
    assert short["spread"]["speedup"] == pytest.approx(0)
    assert base["raw"]["decode_tokens_per_s"] == pytest.approx([5 / v for v in load[1:]])
    assert info["trust"]["trusted"] is trusted and short["trust"]["trusted"] is trusted
    if trusted:
        assert info["trust"]["flags"] == [] and short["trust"]["reasons"] == []
        assert info["trust"]["verdict"] == "No result flagged: every figure within 20% of its median over 4 repeats."
        return
    # the 2-block model: decode 5 x 1.25 / [3, 1, 2.5, 1] = [2.08, 6.25, 2.5, 6.25] tok/s, median 4.375,
    # (6.25 - 2.08) / 4.375 = 95%; prefill 0.1 x load: (0.3 - 0.1) / 0.175 = 114%; latency 0.9 x load: 114%;
    # total 6 / latency: 95%. The paired speedup itself does not vary, so it is not named.
    assert short["trust"]["reasons"] == [
        "repeats vary by more than 20% of the median: time to first token 114% (100..300 ms), "
        "decode tok/s 95% (2.1..6.2), latency 114% (0.90..2.70 s), total tok/s 95% (2.2..6.7)"]
    load_note = "load average 5.0 -> 5.0 on 2 usable CPUs: other processes competed for the cores"
    assert short["trust"]["likely_causes"] == [load_note]
    assert info["trust"]["machine"] == [load_note]
    assert info["trust"]["flags"][1] == (
        f"UNRELIABLE: {short['model']} at batch 1, prompt 5, 6 new: {short['trust']['reasons'][0]}. "
        f"Likely causes: {load_note}.")
    assert info["trust"]["verdict"].startswith("Unreliable results: 2 of 2. Rerun on an idle machine")


def test_flops_shape_of_sliding_window_model():
    model = tiny_model("gemma2")
    shape = flops_shape(model)
    assert shape.windows == (8, None, 8, None) and shape.num_blocks == 4
    assert flops_per_token(shape, 20) - flops_per_token(shape, 0) == 4 * 64 * (8 + 20 + 8 + 20)


def test_labels_are_unique():
    assert labels_for([None, "a", "a", None]) == ["smollm2-135m", "a", "a #2", "smollm2-135m #2"]


@pytest.mark.parametrize("text, needle", [("0", "must be positive"), ("1,-2", "must be positive"),
                                          ("1,x", "not an integer"), ("", "not an integer")])
def test_parse_sizes_refuses(text, needle):
    with pytest.raises(BenchSettingsError, match=needle):
        parse_sizes(text, "--batch-sizes")


def test_context_check():
    config = tiny_config("llama")  # 256 positions
    check_sweep_context("tiny", config, [128], [128])
    with pytest.raises(BenchSettingsError, match="longer than the context of tiny .256 positions") as err:
        check_sweep_context("tiny", config, [64, 200], [57])
    assert err.value.hint == "use --new-tokens 56 or less"  # 200 + 56 = 256: the largest that fits
    with pytest.raises(BenchSettingsError) as err:
        check_sweep_context("tiny", config, [300], [8])  # the prompt alone is too long
    assert err.value.hint == "use --prompt-len 248 or less"


@pytest.mark.parametrize("change, needle", [
    ({"warmup": -1}, "--warmup"), ({"repeats": 0}, "--repeats"), ({"new_tokens": [0]}, "--new-tokens"),
    ({"batch_sizes": []}, "empty"), ({"threads": 0}, "--threads"), ({"max_spread": 0.0}, "--max-spread")])
def test_bad_requests_fail_before_loading(change, needle):
    req = BenchRequest(models=["./no/such/model"], settings=CPU, **change)
    with pytest.raises(BenchSettingsError, match=needle):
        run_bench(req)
