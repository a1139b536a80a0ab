"""A checkpoint's generation_config.json does not steer bench's timed decode or eval's sample text."""

from __future__ import annotations

import torch
from transformers import GenerationConfig

from shortllm.benchmark.timing import MemoryMeter, timed_generate
from shortllm.models.generation import plain_generation
from tests.tiny_models import tiny_model

STEERING = dict(repetition_penalty=1.3, no_repeat_ngram_size=2, num_beams=4, do_sample=True, temperature=0.6,
                max_time=1e-9, return_dict_in_generate=True)


def _greedy(model, ids, n):
    """Greedy decoding by hand: the reference both callers must reproduce."""
    with torch.no_grad():
        for _ in range(n):
            nxt = model(ids, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], dim=1)
    return ids


def _steered(model):
    model.generation_config = GenerationConfig(eos_token_id=None, pad_token_id=0, **STEERING)
    return model.generation_config


def test_timed_generate_ignores_the_checkpoints_generation_config(one_thread):
    torch.manual_seed(0)
    model = tiny_model("llama").eval()
    saved = _steered(model)
    ids = torch.randint(3, 100, (2, 5))
    timing, out = timed_generate(model, ids, torch.ones_like(ids), 6, pad_id=0, eos_id=None, meter=MemoryMeter("cpu"))
    assert torch.equal(out, _greedy(model, ids, 6))
    assert timing.new_tokens == 6
    assert model.generation_config is saved  # restored


def test_eval_sample_text_is_greedy_whatever_the_checkpoint_says(one_thread, tiny_tok_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from shortllm.evaluation.run import _generate

    model = AutoModelForCausalLM.from_pretrained(tiny_tok_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_tok_dir)
    saved = _steered(model)
    text = _generate(model, tokenizer, "The capital of France is", 8)
    enc = tokenizer("The capital of France is", return_tensors="pt")
    expected = _greedy(model, enc["input_ids"], 8)[0, enc["input_ids"].shape[1]:]
    assert text == tokenizer.decode(expected, skip_special_tokens=True)
    assert model.generation_config is saved


def test_plain_generation_keeps_the_special_tokens_and_restores_on_error():
    model = tiny_model("llama")
    model.generation_config = GenerationConfig(eos_token_id=7, bos_token_id=1, pad_token_id=0, num_beams=4)
    saved = model.generation_config
    try:
        with plain_generation(model):
            inside = model.generation_config
            assert (inside.eos_token_id, inside.bos_token_id, inside.pad_token_id) == (7, 1, 0)
            assert inside.num_beams in (None, 1)
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert model.generation_config is saved
