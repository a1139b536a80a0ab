"""Timing one generation: prompts, left padding, forced length (EOS cannot stop it), memory meter."""

import pytest
import torch

from shortllm.benchmark.timing import MemoryMeter, left_pad, special_ids, synthetic_prompts, timed_generate
from tests.tiny_models import tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


def test_synthetic_prompts_are_fixed_distinct_and_avoid_special_tokens():
    a = synthetic_prompts(50, batch=3, length=20, seed=7, avoid={0, 1, 2})
    assert a == synthetic_prompts(50, batch=3, length=20, seed=7, avoid={0, 1, 2})
    assert a != synthetic_prompts(50, batch=3, length=20, seed=8, avoid={0, 1, 2})
    assert [len(r) for r in a] == [20, 20, 20] and len({tuple(r) for r in a}) == 3
    assert not {0, 1, 2} & {t for r in a for t in r}
    assert all(0 <= t < 50 for r in a for t in r)


def test_left_pad():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids == [[5, 6, 7], [0, 0, 8]]
    assert mask == [[1, 1, 1], [0, 0, 1]]


def test_pad_falls_back_to_eos_when_the_tokenizer_has_none(model):
    class NoPad:
        pad_token_id = None
        eos_token_id = 2
        all_special_ids = [1, 2]

    gen = model.generation_config
    saved = gen.pad_token_id
    gen.pad_token_id = None
    try:
        pad, eos, special = special_ids(model, NoPad())
    finally:
        gen.pad_token_id = saved
    assert pad == 2 and eos == 2 and special == {1, 2}


def _greedy_first_token(model, ids, mask):
    with torch.no_grad():
        return int(model(ids, attention_mask=mask).logits[0, -1].argmax())


def test_forced_length_even_when_eos_is_the_greedy_choice(model):
    rows = synthetic_prompts(128, 1, 8, seed=0) + [[9, 10, 11]]  # the second row gets left-padded
    ids, mask = (torch.tensor(x) for x in left_pad(rows, 0))
    eos = _greedy_first_token(model, ids, mask)
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = eos
    try:
        # Plain greedy generation of row 0 stops at once: its first token is EOS.
        plain = model.generate(ids[:1], attention_mask=mask[:1], max_new_tokens=12, do_sample=False,
                               pad_token_id=0)
        assert plain.shape[1] == ids.shape[1] + 1 and int(plain[0, -1]) == eos
        timing, out = timed_generate(model, ids, mask, 12, pad_id=0, eos_id=eos, meter=MemoryMeter("cpu"))
    finally:
        model.generation_config.eos_token_id = saved
    assert out.shape == (2, ids.shape[1] + 12)
    assert not (out[:, ids.shape[1]:] == eos).any()  # EOS masked for the whole forced length
    assert timing.new_tokens == 12 and timing.batch_size == 2
    assert 0 < timing.prefill_s <= timing.latency_s and 0 < timing.decode_s <= timing.latency_s
    assert timing.decode_tokens_per_s == pytest.approx(2 * 11 / timing.decode_s)
    assert timing.throughput_tokens_per_s == pytest.approx(2 * 12 / timing.latency_s)


def test_single_new_token_has_no_decode_rate(model):
    ids = torch.tensor([[3, 4, 5]])
    timing, out = timed_generate(model, ids, torch.ones_like(ids), 1, 0, 2, MemoryMeter("cpu"))
    assert out.shape == (1, 4) and timing.decode_tokens_per_s is None and timing.decode_s == 0


def test_cpu_memory_meter_sees_a_large_allocation():
    meter = MemoryMeter("cpu")
    if meter.kind == "unavailable":
        pytest.skip("no /proc/self/clear_refs here")
    assert meter.kind == "cpu_peak_rss_growth"
    meter.start()
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    del block
    grown = meter.stop()
    assert 48 * 2**20 <= grown <= 256 * 2**20
