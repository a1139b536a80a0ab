"""Layer-by-layer scoring (scoring/sweep.py, sweep_criteria.py) equals the in-memory criteria."""

from __future__ import annotations

import json

import pytest
import torch

from shortllm.errors import UnsupportedArchitectureError
from shortllm.models.loading import LoadSettings, load_model
from shortllm.scoring.base import ScoreContext
from shortllm.scoring.registry import get_criterion
from shortllm.scoring.sweep import WeightStream, choose_offload, open_stream
from shortllm.scoring.sweep_criteria import SWEEPS, run_layerwise
from tests.conftest import run_cli
from tests.tiny_models import ARCHS, tiny_inputs, tiny_model

CPU = LoadSettings(device="cpu")
CRITERIA = ["bi", "angular", "magnitude", "ppl", "sleb", "taylor", "chop"]


def assert_same_scores(expected, got, rel=1e-4):
    assert got.order == expected.order
    for a, b in zip(expected.scores, got.scores):
        assert (a is None) == (b is None)
        if a is not None:
            assert b == pytest.approx(a, rel=rel, abs=1e-9)


def contexts(model_a, model_b, ids, **kw):
    def make(model):
        return ScoreContext(model=model, input_ids=ids, num_remove=2, candidates=[0, 1, 2, 3], **kw)
    return make(model_a), make(model_b)


@pytest.mark.parametrize("arch", ARCHS)
def test_every_criterion_equals_the_in_memory_one(arch, tmp_path, one_thread):
    model = tiny_model(arch)
    model.save_pretrained(tmp_path)
    ids = tiny_inputs(model.config, batch=3, seq=16)
    in_memory = load_model(str(tmp_path), CPU).model
    loaded, stream = open_stream(str(tmp_path), CPU)
    for name in CRITERIA:
        criterion = get_criterion(name)
        # batch_size 2 over 3 rows: row chunks of unequal size, and ppl batches candidate streams together
        a, b = contexts(in_memory, loaded.model, ids, batch_size=2)
        assert_same_scores(criterion.run(a), run_layerwise(stream, criterion, b))
    # only the embeddings and head were ever loaded outside the working block
    assert all(p.is_meta for p in stream.blocks.layers.parameters())


def test_only_one_block_is_on_the_device_at_a_time(tmp_path, one_thread, monkeypatch):
    tiny_model("llama", num_layers=6).save_pretrained(tmp_path)
    loaded, stream = open_stream(str(tmp_path), CPU)
    seen = []
    block = WeightStream.block

    def counting(self, index, trainable=False):
        import contextlib

        @contextlib.contextmanager
        def inner():
            with block(self, index, trainable) as b:
                seen.append([i for i, other in enumerate(self.blocks.layers)
                             if any(not p.is_meta for p in other.parameters())])
                yield b
        return inner()

    monkeypatch.setattr(WeightStream, "block", counting)
    ids = tiny_inputs(loaded.model.config, batch=2, seq=8)
    ctx = ScoreContext(model=loaded.model, input_ids=ids, num_remove=1, candidates=list(range(6)))
    run_layerwise(stream, get_criterion("ppl"), ctx)
    assert seen == [[i] for i in range(6)]  # one sweep: every block read once, alone


def test_ppl_candidates_split_into_groups_when_memory_is_short(tmp_path, one_thread, monkeypatch):
    import shortllm.scoring.sweep_criteria as sc

    model = tiny_model("qwen2")
    model.save_pretrained(tmp_path)
    ids = tiny_inputs(model.config, batch=2, seq=16)
    loaded, stream = open_stream(str(tmp_path), CPU)
    a, b = contexts(load_model(str(tmp_path), CPU).model, loaded.model, ids)
    expected = get_criterion("ppl").run(a)
    one_candidate = ids.numel() * 64 * 4
    monkeypatch.setattr(sc, "available_bytes", lambda device: 4 * one_candidate * 2)  # two streams per sweep
    reads = []
    block = WeightStream.block
    monkeypatch.setattr(WeightStream, "block", lambda self, i, trainable=False: reads.append(i) or block(self, i))
    assert_same_scores(expected, run_layerwise(stream, get_criterion("ppl"), b))
    assert reads == list(range(4)) * 2  # 4 candidates, 2 per sweep: two sweeps


def test_unsupported_family_is_refused_by_name(tmp_path):
    tiny_model("mixtral").save_pretrained(tmp_path)
    with pytest.raises(UnsupportedArchitectureError, match="model type 'mixtral'") as err:
        open_stream(str(tmp_path), CPU)
    assert "--no-offload" in err.value.hint


def test_automatic_choice_follows_free_memory(tiny_llama_dir, monkeypatch):
    import shortllm.scoring.sweep as sweep

    monkeypatch.setattr(sweep, "available_bytes", lambda device: 1 << 40)
    assert choose_offload(str(tiny_llama_dir), CPU, None)[0] is False
    monkeypatch.setattr(sweep, "available_bytes", lambda device: 1 << 20)
    offload, why = choose_offload(str(tiny_llama_dir), CPU, None)
    assert offload is True and "would not fit" in why
    assert choose_offload(str(tiny_llama_dir), CPU, False)[0] is False  # --no-offload wins
    # a criterion without a layer-by-layer form is tried in memory (the log warns)
    assert choose_offload(str(tiny_llama_dir), CPU, None, "auto")[0] is False
    assert set(sweep.LAYERWISE_CRITERIA) == {"chop", *SWEEPS}


FAST = ["--samples", "2", "--seq-len", "16", "--device", "cpu", "-k", "2", "--json"]


@pytest.mark.parametrize("criterion", ["ppl", "taylor"])
def test_cli_offload_writes_the_same_scores_and_says_so(tiny_tok_dir, tmp_path, criterion, one_thread):
    reports = {}
    for flag in ("--offload", "--no-offload"):
        out = tmp_path / flag
        result = run_cli("score", "-m", tiny_tok_dir, "-c", criterion, "--out", out, flag, *FAST)
        assert result.exit_code == 0, result.output
        reports[flag] = json.loads((out / "scores.json").read_text())
    assert reports["--offload"]["mode"] == "layer-by-layer" and reports["--no-offload"]["mode"] == "in-memory"
    assert reports["--offload"]["order"] == reports["--no-offload"]["order"]
    for a, b in zip(reports["--no-offload"]["scores"], reports["--offload"]["scores"]):
        assert (a is None and b is None) or b == pytest.approx(a, rel=1e-4)


def test_prune_offload_scores_layer_by_layer_then_rewrites_the_files(tiny_tok_dir, tmp_path, one_thread):
    args = ["-c", "bi", "--samples", "2", "--seq-len", "16", "--device", "cpu", "--num-blocks", "2", "--json"]
    results = {}
    for flag in ("--offload", "--no-offload"):
        result = run_cli("prune", "-m", tiny_tok_dir, "--out", tmp_path / flag, flag, *args)
        assert result.exit_code == 0, result.output
        results[flag] = json.loads(result.stdout)
    assert results["--offload"]["removed"] == results["--no-offload"]["removed"]
    assert results["--offload"]["scores"]["mode"] == "layer-by-layer"
    assert results["--offload"]["surgery"] == "out-of-core"  # the full model was never loaded
    assert results["--no-offload"]["scores"]["mode"] == "in-memory"


@pytest.mark.slow
def test_embedded_model_ppl_equals_in_memory(demo_dir, one_thread):
    """The embedded SmolLM2-135M: layer-by-layer ppl equals the in-memory ppl (2 windows of 16 tokens; the last
    6 blocks as candidates keep the in-memory tails short; benchmarks/offload_scoring.py compares all 30)."""
    torch.manual_seed(0)
    ids = torch.randint(0, 49152, (2, 16))
    in_memory = load_model(str(demo_dir), CPU).model
    loaded, stream = open_stream(str(demo_dir), CPU)
    criterion = get_criterion("ppl")
    candidates = list(range(24, 30))
    a = ScoreContext(model=in_memory, input_ids=ids, num_remove=6, candidates=candidates)
    b = ScoreContext(model=loaded.model, input_ids=ids, num_remove=6, candidates=candidates)
    expected, got = criterion.run(a), run_layerwise(stream, criterion, b)
    assert_same_scores(expected, got)
    assert got.extras["baseline_ppl"] == pytest.approx(expected.extras["baseline_ppl"], rel=1e-4)


def test_bf16_checkpoint_taylor_runs_in_float32_like_in_memory(tmp_path, one_thread):
    tiny_model("gemma2").to(torch.bfloat16).save_pretrained(tmp_path)
    ids = tiny_inputs(tiny_model("gemma2").config, batch=2, seq=16)
    in_memory = load_model(str(tmp_path), CPU).model
    loaded, stream = open_stream(str(tmp_path), CPU)
    assert next(p for p in loaded.model.parameters() if not p.is_meta).dtype == torch.bfloat16
    for name in ("taylor", "bi", "ppl"):
        a, b = contexts(in_memory, loaded.model, ids)
        assert_same_scores(get_criterion(name).run(a), run_layerwise(stream, get_criterion(name), b))
    # the float32 pass left the skeleton as it was: bf16 head, bf16 placeholders for the blocks
    assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}


def test_offload_with_device_map_is_refused(tiny_llama_dir):
    from shortllm.errors import DeviceError

    with pytest.raises(DeviceError, match="--device-map"):
        choose_offload(str(tiny_llama_dir), LoadSettings(device="cpu", device_map="auto"), True)
    assert choose_offload(str(tiny_llama_dir), LoadSettings(device="cpu", device_map="auto"), None)[0] is False
