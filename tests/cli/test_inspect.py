"""`shortllm inspect`: tables and JSON from the config alone."""

import json

import pytest
from transformers import AutoModelForCausalLM

from tests.conftest import run_cli
from tests.tiny_models import tiny_config


def test_inspect_json_tiny_gemma2(tmp_path):
    tiny_config("gemma2").save_pretrained(tmp_path)  # a config alone is enough: built on meta
    result = run_cli("inspect", "-m", tmp_path, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["model_type"] == "gemma2" and info["num_blocks"] == 4
    assert [b["layer_type"] for b in info["blocks"]] == ["sliding_attention", "full_attention"] * 2
    model = AutoModelForCausalLM.from_config(tiny_config("gemma2"))
    assert info["params"]["total"] == sum(p.numel() for p in model.parameters())
    assert [r["ratio"] for r in info["ratios"]] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]


def test_inspect_table_tiny(tiny_llama_dir):
    result = run_cli("inspect", "-m", tiny_llama_dir)
    assert result.exit_code == 0, result.output
    assert "4 blocks" in result.stdout and "--ratio plans" in result.stdout


@pytest.mark.slow
def test_inspect_embedded_model(demo_dir):
    result = run_cli("inspect", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["model"] == "smollm2-135m" and info["num_blocks"] == 30 and info["hidden_size"] == 576
    assert info["params"]["total"] == 134_515_008
    rows = {r["ratio"]: r for r in info["ratios"]}
    assert rows[0.2]["num_blocks"] == 7  # DESIGN.md: the embedded model at 20% -> 7 blocks
    assert rows[0.8]["removes_all"] is True


def test_inspect_names_the_embedded_models_files(demo_dir):
    import json
    from pathlib import Path

    from tests.conftest import run_cli

    result = run_cli("inspect", "--json")
    assert result.exit_code == 0, result.output
    files = json.loads(result.stdout)["files"]
    assert Path(files["folder"]) == demo_dir.resolve()
    assert files["gguf"].endswith(".gguf") and Path(files["gguf"]).is_file()
    shown = run_cli("inspect").stdout
    assert f"gguf: {files['gguf']}" in shown
