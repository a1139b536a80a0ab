"""The bench sweep on tiny models: every field, forced lengths, alternation, ideal speedups, bad sweeps."""

import pytest

from shortllm.benchmark.flops import flops_per_token
from shortllm.benchmark.run import (BenchRequest, BenchSettingsError, check_sweep_context, flops_shape, labels_for,
                                    parse_sizes, run_bench)
from shortllm.models.loading import LoadSettings
from shortllm.models.surgery import drop_blocks
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
        assert r["speedup"] == pytest.approx(r["decode_tokens_per_s"] / first["decode_tokens_per_s"])
        assert r["efficiency"] == pytest.approx(r["speedup"] / r["ideal_speedup"])
    assert rows[0]["speedup"] == rows[0]["ideal_speedup"] == rows[0]["efficiency"] == 1.0
    assert {"device", "torch_threads", "versions"} <= set(info["environment"])
    assert info["environment"]["device"] == "cpu"


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
    assert names == [False, True] * 6  # A B A B ..., warm-up included
    assert "warmup" in calls[0][2] and "repeat 2" in calls[-1][2]


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
    ({"batch_sizes": []}, "empty"), ({"threads": 0}, "--threads")])
def test_bad_requests_fail_before_loading(change, needle):
    req = BenchRequest(models=["./no/such/model"], settings=CPU, **change)
    with pytest.raises(BenchSettingsError, match=needle):
        run_bench(req)
