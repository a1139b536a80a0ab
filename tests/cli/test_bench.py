"""`shortllm bench` end to end: JSON on stdout, bench.json / bench.png / shortllm.json, one-line errors."""

import json
import struct

import pytest
import torch

from tests.cli.test_bad_input import assert_one_line_error, leftovers
from tests.conftest import run_cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
QUICK = ["--prompt-len", "4", "--new-tokens", "3", "--warmup", "0", "--repeats", "1", "--device", "cpu"]


def test_bench_writes_json_png_and_manifest(tiny_llama_dir, tmp_path):
    out = tmp_path / "bench"
    result = run_cli("bench", "-m", tiny_llama_dir, "-m", tiny_llama_dir, "--batch-sizes", "1,2", *QUICK,
                     "--out", out, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    a, b = str(tiny_llama_dir), f"{tiny_llama_dir} #2"
    assert [(r["model"], r["batch_size"]) for r in info["results"]] == [(a, 1), (b, 1), (a, 2), (b, 2)]
    assert all(r["generated_tokens"] == [3] and r["ideal_speedup"] == 1.0 for r in info["results"])
    assert info["out"] == str(out)
    assert sorted(p.name for p in out.iterdir()) == ["bench.json", "bench.png", "shortllm.json"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dir left beside

    saved = json.loads((out / "bench.json").read_text())
    assert saved["results"] == info["results"]
    assert saved["manifest"]["verb"] == "bench" and "torch" in saved["manifest"]["versions"]
    manifest = json.loads((out / "shortllm.json").read_text())
    assert manifest["verb"] == "bench" and manifest["options"]["batch_sizes"] == [1, 2]
    assert manifest["results"]["results"] == info["results"]

    png = (out / "bench.png").read_bytes()
    assert png[:8] == PNG_MAGIC and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    assert width >= 800 and height >= 600
    from PIL import Image

    with Image.open(out / "bench.png") as image:
        image.verify()


def test_bench_table_without_out(tiny_llama_dir):
    result = run_cli("bench", "-m", tiny_llama_dir, "--batch-sizes", "1", *QUICK)
    assert result.exit_code == 0, result.output
    assert "decode" in result.stdout and "tok/s" in result.stdout and "first token" in result.stdout


@pytest.mark.parametrize("args, needle", [
    (["--batch-sizes", "0"], "--batch-sizes must be positive"),
    (["--batch-sizes", "1,-4"], "--batch-sizes must be positive"),
    (["--batch-sizes", "1,two"], "not an integer"),
    (["--new-tokens", "0"], "--new-tokens must be positive"),
    (["--prompt-len", "200", "--new-tokens", "100"], "longer than the context"),
    (["--repeats", "0"], "--repeats"),
])
def test_bad_sweep(tiny_llama_dir, tmp_path, args, needle):
    result = run_cli("bench", "-m", tiny_llama_dir, "--device", "cpu", *args, "--out", tmp_path / "o")
    assert_one_line_error(result, needle)
    assert leftovers(tmp_path) == []


def test_unknown_model(tiny_llama_dir, tmp_path):
    result = run_cli("bench", "-m", tiny_llama_dir, "-m", "./no/such/model", "--device", "cpu",
                     "--out", tmp_path / "o")
    assert_one_line_error(result, "no such file or directory", "./no/such/model")
    assert leftovers(tmp_path) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda(tiny_llama_dir, tmp_path):
    result = run_cli("bench", "-m", tiny_llama_dir, "--device", "cuda", "--out", tmp_path / "o")
    assert_one_line_error(result, "CUDA is not available")
    assert leftovers(tmp_path) == []


def test_non_empty_out_is_refused_before_loading(tiny_llama_dir, tmp_path):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "keep.txt").write_text("mine")
    result = run_cli("bench", "-m", tiny_llama_dir, *QUICK, "--out", tmp_path / "o")
    assert_one_line_error(result, "is not empty")
    assert (tmp_path / "o" / "keep.txt").read_text() == "mine"


@pytest.mark.slow
def test_bench_embedded_model_against_a_pruned_copy(tmp_path):
    from shortllm.models.loading import LoadSettings, load_model
    from shortllm.models.surgery import drop_blocks
    from shortllm.pruning.export import save_model

    loaded = load_model(None, LoadSettings(device="cpu"))
    drop_blocks(loaded.model, range(21, 28))
    save_model(loaded.model, loaded.tokenizer, tmp_path / "short")
    result = run_cli("bench", "-m", "smollm2-135m", "-m", tmp_path / "short", "--batch-sizes", "2",
                     "--prompt-len", "16", "--new-tokens", "4", "--warmup", "0", "--repeats", "1",
                     "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    full, short = json.loads(result.stdout)["results"]
    assert full["generated_tokens"] == short["generated_tokens"] == [4]
    # 30 -> 23 blocks at prompt 16:
    # (2 x 134,514,432 + 4 x 576 x 30 x 16) / (2 x 109,733,760 + 4 x 576 x 23 x 16)
    assert short["ideal_speedup"] == pytest.approx(270_134_784 / 220_315_392)
    assert short["speedup"] > 0
    assert short["efficiency"] == pytest.approx(short["speedup"] / short["ideal_speedup"])
