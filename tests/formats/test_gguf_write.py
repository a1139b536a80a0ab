"""`shortllm prune` with a GGUF output: kept tensors are the source's quantized bytes, renumbered; metadata
filtered; llama.cpp's index-derived attention pattern guarded; outputs atomic; the demo model exact."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from shortllm.errors import BlockSelectionError, UnsupportedArchitectureError
from shortllm.formats.gguf import open_gguf
from shortllm.formats.gguf_layout import metadata_changes
from tests.conftest import run_cli
from tests.formats.tiny_gguf import write_tiny_gguf


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _assert_pruned_copy(src: Path, out: Path, kept: list[int]) -> None:
    """Every tensor of ``out`` is the source tensor of the renumbered block, same type/shape/bytes; metadata is
    the source's with block_count and the per-block arrays filtered."""
    source, result = open_gguf(src), open_gguf(out)
    by_name = {t.name: t for t in source.reader.tensors}
    expected = {}
    for t in source.reader.tensors:
        if t.name.startswith("blk."):
            block, rest = t.name[4:].split(".", 1)
            if int(block) in kept:
                expected[f"blk.{kept.index(int(block))}.{rest}"] = t.name
        else:
            expected[t.name] = t.name
    assert [t.name for t in result.reader.tensors] == list(expected)  # source order, renumbered
    for t in result.reader.tensors:
        s = by_name[expected[t.name]]
        assert t.tensor_type == s.tensor_type and list(t.shape) == list(s.shape)
        assert t.data.tobytes() == s.data.tobytes(), t.name
    arch = source.arch
    meta, new = source.metadata, result.metadata
    assert new[f"{arch}.block_count"] == len(kept)
    for key in (f"{arch}.attention.head_count_kv", f"{arch}.feed_forward_length", f"{arch}.attention.head_count"):
        assert new[key] == [meta[key][i] for i in kept]
    changed = {f"{arch}.block_count", f"{arch}.attention.head_count_kv", f"{arch}.feed_forward_length",
               f"{arch}.attention.head_count"}
    assert {k: v for k, v in new.items() if k not in changed} == {k: v for k, v in meta.items() if k not in changed}
    assert new["tokenizer.ggml.tokens"] == meta["tokenizer.ggml.tokens"] and "tokenizer.chat_template" in new


@pytest.mark.parametrize(("arch", "num_blocks", "removed"), [
    ("llama", 4, [1, 2]), ("qwen2", 4, [0, 3]), ("gemma3", 12, [6, 7, 8, 9, 10, 11]),
])
def test_pruned_gguf_holds_the_kept_quantized_tensors_byte_for_byte(tmp_path, arch, num_blocks, removed):
    src = write_tiny_gguf(tmp_path / f"{arch}.gguf", arch, num_blocks)
    before = _sha(src)
    out = tmp_path / "short.gguf"
    result = run_cli("prune", "-m", src, "--blocks", ",".join(map(str, removed)), "--out", out, "--json")
    assert result.exit_code == 0, result.output
    kept = [i for i in range(num_blocks) if i not in removed]
    _assert_pruned_copy(src, out, kept)
    assert _sha(src) == before  # the input is only read
    info = json.loads(result.stdout)
    assert info["format"] == "gguf" and info["kept"] == kept and info["written"]["byte_identical_tensors"] > 0
    manifest = json.loads((tmp_path / "short.shortllm.json").read_text())
    assert manifest["verb"] == "prune" and manifest["options"]["format"] == "gguf"
    assert manifest["results"]["removed"] == removed and manifest["source"]["arch"] == arch
    assert "Q4_K" in manifest["results"]["written"]["tensor_types"]
    assert "Removed blocks: " + ", ".join(map(str, removed)) in (tmp_path / "short.README.md").read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_format_gguf_writes_a_folder_like_every_output(tmp_path):
    src = write_tiny_gguf(tmp_path / "llama.gguf")
    out = tmp_path / "pruned"
    result = run_cli("prune", "-m", src, "-b", "3", "--format", "gguf", "--out", out)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "model.gguf", "shortllm.json"]
    _assert_pruned_copy(src, out / "model.gguf", [0, 1, 2])
    again = run_cli("prune", "-m", src, "-b", "3", "--format", "gguf", "--out", out)
    assert again.exit_code == 2 and "not empty" in again.stderr


def test_gemma3_cut_that_moves_the_global_blocks_is_refused(tmp_path):
    src = write_tiny_gguf(tmp_path / "gemma3.gguf", "gemma3", 12)
    out = tmp_path / "short.gguf"
    result = run_cli("prune", "-m", src, "--blocks", "0", "--out", out)
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert "\n" not in line and "--keep-attention-pattern" in line and "gemma3: every 6th block" in line
    assert "5 (full-attention -> sliding-window)" in line  # block 5 would become block 4, a sliding one
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

    whole_period = run_cli("prune", "-m", src, "--blocks", "0-5", "--out", out, "--json")
    assert whole_period.exit_code == 0, whole_period.output
    record = json.loads(whole_period.stdout)["runtime_patterns"]
    assert record["kept"] and record["rules"][0]["period"] == 6 and record["rules"][0]["arch"] == "gemma3"
    assert "llama.cpp attention patterns checked" in (tmp_path / "short.README.md").read_text()


def test_a_stated_period_overrides_the_arch_default(tmp_path):
    src = write_tiny_gguf(tmp_path / "gemma3.gguf", "gemma3", 8,
                          extra={"gemma3.attention.sliding_window_pattern": 2})
    assert run_cli("prune", "-m", src, "-b", "0", "--out", tmp_path / "a.gguf").exit_code == 2
    assert run_cli("prune", "-m", src, "-b", "2,3", "--out", tmp_path / "b.gguf").exit_code == 0


def test_bad_outputs_are_refused_before_anything_is_written(tmp_path, tiny_llama_dir):
    src = write_tiny_gguf(tmp_path / "llama.gguf")
    before = _sha(src)
    same = run_cli("prune", "-m", src, "-b", "1", "--out", src, "--overwrite")
    assert same.exit_code == 2 and "change that input" in same.stderr
    hf = run_cli("prune", "-m", tiny_llama_dir, "-b", "1", "--out", tmp_path / "x.gguf")
    assert hf.exit_code == 2 and "convert_hf_to_gguf" in hf.stderr and not (tmp_path / "x.gguf").exists()
    mixed = run_cli("prune", "-m", src, "-b", "1", "--format", "hf", "--out", tmp_path / "y.gguf")
    assert mixed.exit_code == 2 and "--format hf" in mixed.stderr
    out = tmp_path / "short.gguf"
    assert run_cli("prune", "-m", src, "-b", "1", "--out", out).exit_code == 0
    first = _sha(out)
    exists = run_cli("prune", "-m", src, "-b", "2", "--out", out)
    assert exists.exit_code == 2 and "--overwrite" in exists.stderr and _sha(out) == first
    assert run_cli("prune", "-m", src, "-b", "2", "--out", out, "--overwrite").exit_code == 0
    _assert_pruned_copy(src, out, [0, 1, 3])
    dry = run_cli("prune", "-m", src, "-b", "2", "--out", tmp_path / "dry.gguf", "--dry-run")
    assert dry.exit_code == 0 and not (tmp_path / "dry.gguf").exists()
    assert _sha(src) == before


def test_layer_index_metadata_is_renumbered_or_refused():
    meta = {"deepseek2.block_count": 6, "deepseek2.leading_dense_block_count": 2,
            "deepseek2.nextn_predict_layers": 1, "deepseek2.attention.head_count": [8] * 6,
            "deepseek2.rope.dimension_sections": [1, 2, 3, 4, 5, 6], "tokenizer.ggml.scores": [0.0] * 6}
    changes = metadata_changes("deepseek2", meta, [1, 2, 3, 5], 6)
    assert changes["deepseek2.block_count"] == 4
    assert changes["deepseek2.leading_dense_block_count"] == 1  # block 1 stays first and dense
    assert changes["deepseek2.nextn_predict_layers"] == 1  # the MTP block 5 is kept, still last
    assert metadata_changes("deepseek2", meta, [0, 1, 2], 6)["deepseek2.nextn_predict_layers"] == 0
    with pytest.raises(UnsupportedArchitectureError, match="shared_kv_layers"):
        metadata_changes("gemma3n", {"gemma3n.attention.shared_kv_layers": 10}, [0], 2)
    with pytest.raises(UnsupportedArchitectureError, match="mystery.per_layer_thing"):
        metadata_changes("mystery", {"mystery.per_layer_thing": [1, 2, 3]}, [0, 1], 3)
    with pytest.raises(BlockSelectionError, match="blocks 0-2 .* none of them can be removed"):
        metadata_changes("qwen3vl", {"qwen3vl.n_deepstack_layers": 3}, [0, 2, 3], 4)
    assert metadata_changes("qwen3vl", {"qwen3vl.n_deepstack_layers": 3}, [0, 1, 2], 4)


def test_pruned_demo_gguf_dequantizes_to_the_pruned_dequantized_model(tmp_path, monkeypatch, demo_dir, one_thread):
    """Exactness across formats on the embedded Q4_1 model: the GGUF written by copying bytes, dequantized by
    shortllm's own GGUF loading path, equals the dequantized model with the same blocks removed -- every weight
    and the logits."""
    import torch

    from shortllm.models.demo import find_demo_gguf
    from shortllm.models.loading import from_pretrained_strict, load_model
    from shortllm.models.surgery import drop_blocks

    src = find_demo_gguf(download=False)
    before = _sha(src)
    monkeypatch.setenv("SHORTLLM_CACHE", str(tmp_path / "cache"))  # the pruned file's conversion goes here
    out = tmp_path / "short.gguf"
    removed = [3, 17]
    result = run_cli("prune", "-m", src, "--blocks", "3,17", "--out", out)
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "cache").exists()  # --blocks dequantized nothing

    reference = from_pretrained_strict(str(demo_dir), str(demo_dir), dtype=torch.float32).eval()
    drop_blocks(reference, removed)
    pruned = load_model(str(out)).model
    assert pruned.config.num_hidden_layers == 28
    ours, theirs = pruned.state_dict(), reference.state_dict()
    assert set(ours) == set(theirs)
    for name in theirs:
        assert torch.equal(ours[name], theirs[name]), name
    ids = torch.tensor([[1, 504, 3458, 282, 253, 1345, 30, 216]])
    with torch.no_grad():
        assert torch.equal(pruned(ids, use_cache=False).logits, reference(ids, use_cache=False).logits)
    assert _sha(src) == before
    assert np.isfinite(json.loads((tmp_path / "short.shortllm.json").read_text())["results"]["achieved_ratio"])


def test_ratio_and_count_choose_on_the_dequantized_scores_and_keep_the_pattern(tmp_path, monkeypatch):
    """--num-blocks on a GGUF: the criterion's ranking (here a fixed report standing in for scores computed on the
    dequantized model) is refused when it moves gemma3's global blocks, and --keep-attention-pattern turns it
    into the best-ranked removal that keeps them; --blocks-free runs are checked the same way."""
    import shortllm.pruning.select as prune_run  # select_blocks, shared by HF and GGUF prune

    order = [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 5, 11]  # least important first: the criterion's own 6 move block 5

    def fake_score(loaded, options, k, progress, ratio=None, runner=None, pattern_check=None):
        return {"criterion": "magnitude", "num_blocks": 12, "num_remove": k, "protected": [], "iterative": False,
                "order": order, "scores": [float(order.index(i)) for i in range(12)], "extras": {},
                "calibration": None, "timings_s": {}}

    monkeypatch.setattr(prune_run, "load_for_scoring",
                        lambda spec, settings, offload, criterion=None: ("dequantized", None))
    monkeypatch.setattr(prune_run, "score_loaded", fake_score)
    src = write_tiny_gguf(tmp_path / "gemma3.gguf", "gemma3", 12)
    refused = run_cli("prune", "-m", src, "-k", "6", "-c", "magnitude", "--out", tmp_path / "a.gguf")
    assert refused.exit_code == 2 and "--keep-attention-pattern" in refused.stderr
    kept = run_cli("prune", "-m", src, "-k", "6", "-c", "magnitude", "--keep-attention-pattern",
                   "--out", tmp_path / "b.gguf", "--json")
    assert kept.exit_code == 0, kept.output
    info = json.loads(kept.stdout)
    assert info["removed"] == [0, 1, 2, 3, 4, 5] and info["runtime_patterns"]["kept"]
    assert "--keep-attention-pattern" in info["how"]
    _assert_pruned_copy(src, tmp_path / "b.gguf", list(range(6, 12)))
    ratio = run_cli("prune", "-m", src, "-r", "0.3", "-c", "magnitude", "--keep-attention-pattern",
                    "--out", tmp_path / "c.gguf", "--json")
    assert ratio.exit_code == 0, ratio.output
    info = json.loads(ratio.stdout)
    assert info["achieved_ratio"] <= 0.3 and info["runtime_patterns"]["kept"] and info["removed"]


def test_a_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    import shortllm.pruning.gguf as job

    src = write_tiny_gguf(tmp_path / "llama.gguf")

    def half_then_fail(source, dest, keep, progress=None):
        dest.write_bytes(b"GGUF half")
        raise KeyboardInterrupt

    monkeypatch.setattr(job, "write_pruned_gguf", half_then_fail)
    for out in (tmp_path / "short.gguf", tmp_path / "folder"):
        result = run_cli("prune", "-m", src, "-b", "1", "--format", "gguf", "--out", out)
        assert result.exit_code == 130  # Ctrl-C: the CLI's Interrupted
    assert sorted(p.name for p in tmp_path.iterdir()) == ["llama.gguf"]


@pytest.mark.parametrize(("damage", "needle"), [
    (dict(skip=("blk.2.ffn_down.weight",)), "lacks blk.2.ffn_down.weight, which other blocks have"),
    (dict(num_blocks=5, tensor_blocks=4), "states 5 blocks (llama.block_count) but has no tensors for block 4"),
])
@pytest.mark.parametrize("out", ["x.gguf", "folder"])
def test_an_incomplete_gguf_is_refused_on_every_path(tmp_path, damage, needle, out):
    from tests.cli.test_bad_input import assert_one_line_error
    from tests.conftest import tree_digest

    src = write_tiny_gguf(tmp_path / "src.gguf", **damage)
    before = tree_digest(tmp_path)
    result = run_cli("prune", "-m", src, "--blocks", "1", "--out", tmp_path / out)
    assert_one_line_error(result, needle)
    assert tree_digest(tmp_path) == before


def test_blocks_that_differ_by_design_are_not_called_incomplete(tmp_path):
    attention = tuple(f"blk.1.attn_{p}.weight" for p in ("q", "k", "v", "output"))
    noop = write_tiny_gguf(tmp_path / "noop.gguf", skip=attention, head_count=[4, 0, 4, 4])  # deci: no attention
    assert open_gguf(noop).num_blocks == 4
    mtp = write_tiny_gguf(tmp_path / "mtp.gguf", extra={"llama.nextn_predict_layers": 1},
                          extra_tensors={"blk.3.nextn.eh_proj.weight": np.zeros((8, 8))})  # an MTP layer last
    assert open_gguf(mtp).num_blocks == 4
    with pytest.raises(Exception, match="lacks blk.1.attn_k.weight"):  # the same gap without the metadata
        open_gguf(write_tiny_gguf(tmp_path / "gap.gguf", skip=attention))
