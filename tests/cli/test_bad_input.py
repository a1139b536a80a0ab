"""Bad input: one line on stderr, exit code 2, nothing written, input untouched (DESIGN.md "Errors")."""

from pathlib import Path

import pytest
from transformers import BertConfig

from tests.conftest import run_cli, tree_digest


def assert_one_line_error(result, *needles):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir())


@pytest.fixture
def out_parent(tmp_path) -> Path:
    d = tmp_path / "outputs"
    d.mkdir()
    return d


def prune(model, *extra, out=None):
    args = ["prune", "-m", model, "--blocks", "1", "--device", "cpu"]
    if out is not None:
        args += ["--out", out]
    return run_cli(*args, *extra)


def test_nonexistent_path(out_parent):
    assert_one_line_error(prune("./no/such/model", out=out_parent / "o"), "no such file or directory")
    assert leftovers(out_parent) == []


def test_directory_without_config(tmp_path, out_parent):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("hi")
    assert_one_line_error(prune(str(empty), out=out_parent / "o"), "no config.json")
    assert leftovers(out_parent) == []


def test_corrupt_gguf(tmp_path, out_parent):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + bytes(range(256)) * 8)
    before = tree_digest(tmp_path / "bad.gguf" if False else tmp_path)
    assert_one_line_error(prune(str(bad), out=out_parent / "o"), "bad.gguf")
    assert leftovers(out_parent) == []
    assert tree_digest(tmp_path) == before


def test_corrupt_safetensors(tiny_llama_dir, tmp_path, out_parent):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_bytes((tiny_llama_dir / "config.json").read_bytes())
    (broken / "model.safetensors").write_bytes((tiny_llama_dir / "model.safetensors").read_bytes()[:300])
    before = tree_digest(broken)
    # --blocks: out-of-core surgery reads the file's header itself and names the damaged file
    assert_one_line_error(prune(str(broken), out=out_parent / "o"),
                          f"{broken / 'model.safetensors'} is not a readable safetensors file")
    assert leftovers(out_parent) == []
    assert tree_digest(broken) == before


def test_encoder_only_model(tmp_path, out_parent):
    bert = tmp_path / "bert"
    BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64).save_pretrained(bert)
    assert_one_line_error(prune(str(bert), out=out_parent / "o"), "encoder-only")
    assert leftovers(out_parent) == []


@pytest.mark.parametrize("blocks,needle", [
    ("4", "out of range"), ("-1", "is negative"), ("1,1", "given twice"), ("x", "not an integer"),
    ("0,1,2,3", "removing all 4 blocks"), ("0-3", "removing all 4 blocks"),
])
def test_bad_blocks(tiny_llama_dir, out_parent, blocks, needle):
    before = tree_digest(tiny_llama_dir)
    result = run_cli("prune", "-m", tiny_llama_dir, f"--blocks={blocks}", "--out", out_parent / "o")
    assert_one_line_error(result, needle)
    assert leftovers(out_parent) == []
    assert tree_digest(tiny_llama_dir) == before


def test_out_is_a_file(tiny_llama_dir, out_parent):
    target = out_parent / "file.txt"
    target.write_text("keep me")
    assert_one_line_error(prune(str(tiny_llama_dir), out=target), "existing file")
    assert target.read_text() == "keep me" and leftovers(out_parent) == ["file.txt"]


def test_out_not_empty_without_overwrite(tiny_llama_dir, out_parent):
    target = out_parent / "full"
    target.mkdir()
    (target / "x").write_text("keep me")
    assert_one_line_error(prune(str(tiny_llama_dir), out=target), "not empty", "--overwrite")
    assert (target / "x").read_text() == "keep me" and leftovers(out_parent) == ["full"]


def test_out_below_a_file(tiny_llama_dir, out_parent):
    blocker = out_parent / "a-file"
    blocker.write_text("")
    assert_one_line_error(prune(str(tiny_llama_dir), out=blocker / "sub"), f"{blocker} is a file, not a folder")
    assert leftovers(out_parent) == ["a-file"]


def test_unknown_dtype(tiny_llama_dir, out_parent):
    assert_one_line_error(prune(str(tiny_llama_dir), "--dtype", "float64", out=out_parent / "o"), "unknown dtype")
    assert leftovers(out_parent) == []


def test_cuda_without_cuda(tiny_llama_dir, out_parent):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")  # the error path only exists without it
    result = run_cli("prune", "-m", tiny_llama_dir, "--blocks", "1", "--device", "cuda", "--out", out_parent / "o")
    assert_one_line_error(result, "CUDA is not available")
    assert leftovers(out_parent) == []


def test_out_required_unless_dry_run(tiny_llama_dir):
    assert_one_line_error(prune(str(tiny_llama_dir)), "--out is required")


def test_hub_id_offline_is_one_line(monkeypatch, out_parent):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import time
    result = prune("shortllm-test-org/no-such-model-xyz", out=out_parent / "o")
    assert_one_line_error(result, "no-such-model-xyz", "local directory")
    assert leftovers(out_parent) == []


def test_debug_env_shows_traceback(tiny_llama_dir, monkeypatch):
    from shortllm.errors import BlockSelectionError

    monkeypatch.setenv("SHORTLLM_DEBUG", "1")
    with pytest.raises(BlockSelectionError):
        run_cli("prune", "-m", tiny_llama_dir, "--blocks", "9", "--dry-run")
