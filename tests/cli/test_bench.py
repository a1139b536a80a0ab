"""`shortllm bench` end to end: JSON on stdout, bench.json / bench.png / shortllm.json, one-line errors."""

import json
import struct

import pytest
import torch

from tests.cli.test_bad_input import assert_one_line_error, leftovers
from tests.conftest import run_cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
QUICK = ["--prompt-len", "4", "--new-tokens", "3", "--warmup", "0", "--repeats", "1", "--device", "cpu"]


@pytest.fixture
def quiet_machine(monkeypatch):
    """The machine's sensors report an idle machine (so no load note joins the flags)."""
    from shortllm.benchmark import machine

    monkeypatch.setattr(machine, "sample", lambda when: {"when": when, "load_average": [0.5, 0.5, 0.5],
                                                         "cpu_mhz": None, "temperature_c": None,
                                                         "thermal_throttle_count": None})


def test_bench_writes_json_png_and_manifest(tiny_llama_dir, tmp_path, quiet_machine):
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
    assert saved["results"] == info["results"] and saved["trust"] == info["trust"]
    # one repeat shows no spread: every result is flagged, in the JSON and as a line on stderr
    assert info["trust"]["trusted"] is False and info["trust"]["unreliable"] == 4
    assert all(r["trust"]["reasons"][0] == "only 1 repeat: at least 3 are needed to see the spread"
               for r in info["results"])
    assert f"UNRELIABLE: {a} at batch 1, prompt 4, 3 new: only 1 repeat: at least 3 are needed to see the " \
           "spread. Likely causes: no warm-up run (--warmup 0): the first repeat pays one-time setup costs." \
        in result.stderr
    assert info["trust"]["verdict"] in result.stderr  # stdout holds nothing but the JSON
    assert saved["manifest"]["verb"] == "bench" and "torch" in saved["manifest"]["versions"]
    manifest = json.loads((out / "shortllm.json").read_text())
    assert manifest["verb"] == "bench" and manifest["options"]["batch_sizes"] == [1, 2]
    assert manifest["results"]["results"] == info["results"] and manifest["results"]["trust"] == info["trust"]

    png = (out / "bench.png").read_bytes()
    assert png[:8] == PNG_MAGIC and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    assert width >= 800 and height >= 600
    from PIL import Image

    with Image.open(out / "bench.png") as image:
        image.verify()


def test_bench_table_without_out(tiny_llama_dir, wide):
    result = run_cli("bench", "-m", tiny_llama_dir, "--batch-sizes", "1", *QUICK)
    assert result.exit_code == 0, result.output
    assert "decode" in result.stdout and "tok/s" in result.stdout and "first token" in result.stdout
    assert "median [min..max] of 1 repeat;" in result.stdout
    flag = [line for line in result.stdout.splitlines() if line.startswith("UNRELIABLE")]
    assert len(flag) == 1 and flag[0].startswith(
        f"UNRELIABLE: {tiny_llama_dir} at batch 1, prompt 4, 3 new: only 1 repeat: at least 3 are needed to see "
        "the spread. Likely causes: ")  # then the machine's load if it is busy, and:
    assert flag[0].endswith("no warm-up run (--warmup 0): the first repeat pays one-time setup costs.")
    assert [line for line in result.stdout.splitlines()
            if line.startswith("Unreliable results: 1 of 1. Rerun on an idle machine")]


@pytest.fixture
def wide(monkeypatch):
    """A wide console, so table cells are not folded."""
    from shortllm.cli.output import console, err_console

    monkeypatch.setenv("COLUMNS", "400")
    for con in (console, err_console):
        monkeypatch.setattr(con, "width", 400)


@pytest.fixture
def scripted(tiny_llama_dir, tmp_path, monkeypatch, quiet_machine):
    """A 4-block and a 2-block tiny model, timed by a fake: the 2-block one 1.25x faster at every step,
    while the machine slows both by 0..10% (steps: warm-up, then three repeats); a quiet machine."""
    from shortllm.benchmark import timing
    from shortllm.models.surgery import drop_blocks
    from tests.benchmark.fake_timing import fake_generate
    from tests.tiny_models import tiny_model

    short = tmp_path / "short"
    drop_blocks(tiny_model("llama"), [1, 2]).save_pretrained(short)
    monkeypatch.setattr(timing, "timed_generate", fake_generate([], [1.0, 1.0, 1.1, 1.05]))
    return [tiny_llama_dir, short]


def test_bench_table_shows_the_range_of_every_figure(scripted, wide, tmp_path):
    full, short = scripted
    result = run_cli("bench", "-m", full, "-m", short, "--batch-sizes", "1", "--prompt-len", "4",
                     "--new-tokens", "3", "--warmup", "1", "--repeats", "3", "--device", "cpu", "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    ideal = json.loads((tmp_path / "o" / "bench.json").read_text())["results"][1]["ideal_speedup"]
    cells = [[part.strip() for part in line.split("│")[4:6]] for line in result.stdout.splitlines()
             if line.startswith("│")]
    # 4 blocks: decode 2 tokens in 1.0 x [1, 1.1, 1.05] s = 2.0, 1.82, 1.90 tok/s; prefill 100..110 ms;
    # latency 1.1 x load; 3 tokens / latency. 2 blocks: 0.8 s, so x1.25 in every pair; 1 MiB every run.
    assert cells == [
        ["decode 1.9 tok/s [1.8..2.0]", "decode 2.4 tok/s [2.3..2.5]"],
        ["first token 105 ms [100..110]", f"x1.25 [x1.25..x1.25] (ideal x{ideal:.2f}, {1.25 / ideal:.0%})"],
        ["total 1.16 s [1.10..1.21]", "first token 105 ms [100..110]"],
        ["overall 2.6 tok/s [2.5..2.7]", "total 0.95 s [0.90..0.99] (x1.22 [x1.22..x1.22])"],
        ["mem +1.0 MiB [1.0..1.0]", "overall 3.2 tok/s [3.0..3.3]"],
        ["", "mem +1.0 MiB [1.0..1.0]"],
    ]
    assert "UNRELIABLE" not in result.stdout
    assert "No result flagged: every figure within 20% of its median over 3 repeats." in result.stdout.splitlines()


@pytest.mark.parametrize("args, needle", [
    (["--batch-sizes", "0"], "--batch-sizes must be positive"),
    (["--batch-sizes", "1,-4"], "--batch-sizes must be positive"),
    (["--batch-sizes", "1,two"], "not an integer"),
    (["--new-tokens", "0"], "--new-tokens must be positive"),
    (["--prompt-len", "200", "--new-tokens", "100"], "longer than the context"),
    (["--repeats", "0"], "--repeats"),
    (["--max-spread", "0"], "--max-spread must be above 0"),
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
