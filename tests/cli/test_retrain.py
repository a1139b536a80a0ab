"""``shortllm retrain`` through the CLI: outputs, the three methods, and bad input (one line, exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM

from tests.conftest import run_cli
from tests.training.helpers import make_pruned, make_tiny_model_with_tokenizer, write_small_text

QUICK = ["--seq-len", "32", "--batch-size", "2", "--max-steps", "2", "--max-eval-rows", "2", "--eval-every", "0",
         "--save-every", "0", "--device", "cpu"]


def _card(folder: Path, method_words: str, library: str = "transformers", base_model: str | None = None):
    """The folder's README.md parsed by huggingface_hub: valid metadata, what was done, the numbers, the command."""
    from huggingface_hub import ModelCard

    card = ModelCard.load(folder / "README.md")
    tags = ["shortllm", "depth-pruning", "healing"] + (["lora"] if "LoRA" in method_words else [])
    assert card.data.library_name == library and card.data.tags == tags
    assert card.data.base_model == base_model
    if base_model is None:
        assert "base_model" not in card.content.split("---")[1]  # a local path is no base_model
    manifest = json.loads((folder / "shortllm.json").read_text())
    r = manifest["results"]
    assert method_words in card.text
    seq_len = manifest["options"]["seq_len"]
    assert f"| optimizer steps | {r['steps']} (batch of 2 rows of at most {seq_len} tokens) |" in card.text
    assert f"| tokens seen | {r['tokens_seen']:,} |" in card.text
    assert f"| held-out cross-entropy before | {r['initial_eval_loss']:.4f} |" in card.text
    assert f"| held-out cross-entropy after | {r['final_eval_loss']:.4f} |" in card.text
    assert f"Made with:\n\n```\n{manifest['options']['command']}\n```" in card.text
    return card


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("retrain-cli")
    model = make_tiny_model_with_tokenizer(root / "tiny")
    alpaca = root / "alpaca.jsonl"
    alpaca.write_text("\n".join(json.dumps({"instruction": f"List {i} numbers.", "input": "" if i % 2 else "now",
                                            "output": " ".join(map(str, range(i)))}) for i in range(1, 41)))
    return {"model": model, "pruned": make_pruned(model, root / "pruned", [3]),
            "text": write_small_text(root / "small.txt"), "alpaca": alpaca}


def test_cpt_end_to_end(inputs, tmp_path):
    out = tmp_path / "healed"
    result = run_cli("retrain", "--method", "cpt", "-m", inputs["pruned"], "--data", inputs["text"], *QUICK,
                     "--out", out, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["finished"] and report["steps"] == 2 and report["saved"] == "model"
    assert report["tokens_seen"] == 2 * 2 * 32 and report["tokens_per_s"] > 0
    manifest = json.loads((out / "shortllm.json").read_text())
    assert manifest["options"]["method"] == "cpt" and len(manifest["results"]["loss_curve"]) == 2
    assert (out / "train_curve.png").stat().st_size > 0
    card = _card(out, "by continued pretraining (every weight trained on the next-token loss)")
    assert "That model was depth-pruned from" in card.text and "- Removed blocks (original indices): 3\n" in card.text


def test_lora_on_instructions_merges_into_a_plain_model(inputs, tmp_path):
    out = tmp_path / "lora"
    result = run_cli("retrain", "--method", "lora", "-m", inputs["pruned"], "--data", inputs["alpaca"], *QUICK,
                     "--seq-len", "96", "--out", out)
    assert result.exit_code == 0, result.stderr
    assert "merged model" in result.stdout
    model = AutoModelForCausalLM.from_pretrained(out)
    assert not any("lora" in n for n, _ in model.named_parameters())
    data = json.loads((out / "shortllm.json").read_text())["results"]["data"]
    assert data["format"] == "instruction" and data["records"] == 40
    card = _card(out, "by LoRA (rank 8, alpha 16, dropout 0.05), merged into the weights")
    assert "(instruction records; " in card.text


def test_lora_save_adapter(inputs, tmp_path):
    out = tmp_path / "adapter"
    result = run_cli("retrain", "--method", "lora", "-m", inputs["pruned"], "--data", inputs["text"], *QUICK,
                     "--save-adapter", "--out", out)
    assert result.exit_code == 0, result.stderr
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["lora_alpha"] == 16
    assert set(config["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                             "down_proj"}
    assert not (out / "model.safetensors").exists()
    card = _card(out, "by LoRA (rank 8, alpha 16, dropout 0.05), saved as an adapter (not merged)", library="peft")
    assert "PeftModel.from_pretrained" in card.text and "Model Card for Model ID" not in card.text  # not peft's


def test_kd_defaults_to_the_unpruned_source(inputs, tmp_path):
    result = run_cli("retrain", "--method", "kd", "-m", inputs["pruned"], "--data", inputs["text"], *QUICK,
                     "--out", tmp_path / "kd", "--json")
    assert result.exit_code == 0, result.stderr
    assert Path(json.loads(result.stdout)["teacher"]) == inputs["model"]
    _card(tmp_path / "kd", f"by knowledge distillation from `{inputs['model']}` (loss = T^2 x "
                           "KL(teacher || student), forward KL only, T = 1)")


def test_card_names_the_hub_original_through_a_chain(inputs, tmp_path):
    # A folder pruned from a hub model records its hub id; every healed descendant names it as base_model.
    import shutil

    pruned = tmp_path / "pruned"
    shutil.copytree(inputs["pruned"], pruned)
    manifest = json.loads((pruned / "shortllm.json").read_text())
    manifest["source"]["hub_id"] = "HuggingFaceTB/SmolLM2-135M-Instruct"
    (pruned / "shortllm.json").write_text(json.dumps(manifest))
    folder = pruned
    for name in ("healed", "healed-again"):
        result = run_cli("retrain", "--method", "cpt", "-m", folder, "--data", inputs["text"], *QUICK,
                         "--out", tmp_path / name)
        assert result.exit_code == 0, result.stderr
        folder = tmp_path / name
        _card(folder, "by continued pretraining", base_model="HuggingFaceTB/SmolLM2-135M-Instruct")
        source = json.loads((folder / "shortllm.json").read_text())["source"]
        assert source["original_hub_id"] == "HuggingFaceTB/SmolLM2-135M-Instruct"


def _bad_alpaca(tmp: Path) -> Path:
    path = tmp / "bad.jsonl"
    path.write_text(json.dumps({"instruction": "a", "output": "b"}) + "\n" + json.dumps({"instruction": "c"}) + "\n")
    return path


def _few_words(tmp: Path) -> Path:
    path = tmp / "few.txt"
    path.write_text("Only a handful of words here.")
    return path


BAD = [
    ("lr zero", lambda i, t: ["--method", "cpt", "--lr", "0"], "--lr 0 must be a positive number"),
    ("lr negative", lambda i, t: ["--method", "cpt", "--lr", "-1e-4"], "must be a positive number"),
    ("unknown method", lambda i, t: ["--method", "sft"], "unknown --method 'sft'"),
    ("adapter with cpt", lambda i, t: ["--method", "cpt", "--save-adapter"], "--save-adapter only applies"),
    ("missing field", lambda i, t: ["--method", "lora", "--data", _bad_alpaca(t), "--format", "instruction"],
     "bad.jsonl:2 has no 'output' field"),
    ("too few tokens", lambda i, t: ["--method", "cpt", "--data", _few_words(t)], "less than one block of 32"),
    ("batch too big", lambda i, t: ["--method", "cpt", "--batch-size", "5000"],
     "one optimizer step needs 5000 (--batch-size 5000 x --grad-accum 1 x 1 process)"),
    ("kd without teacher", lambda i, t: ["--method", "kd", "-m", i["model"]], "needs a teacher"),
    ("kd other vocabulary", lambda i, t: ["--method", "kd", "--teacher", i["tiny_llama"]],
     "vocabulary of 128 tokens, the student 512"),
    ("kd missing teacher", lambda i, t: ["--method", "kd", "--teacher", t / "nowhere"], "cannot be found"),
    ("resume without checkpoint", lambda i, t: ["--method", "cpt", "--resume"], "no checkpoint in"),
    ("streaming instructions", lambda i, t: ["--method", "lora", "--data", i["alpaca"], "--format", "instruction",
                                             "--streaming"], "--streaming reads plain text"),
    ("shuffle window in memory", lambda i, t: ["--method", "cpt", "--shuffle-window", "8"],
     "--shuffle-window applies to --streaming"),
    ("streaming auto instructions", lambda i, t: ["--method", "lora", "--data", i["alpaca"], "--streaming"],
     "holds instruction records, and --streaming reads plain text"),
    ("streaming too few tokens", lambda i, t: ["--method", "cpt", "--data", _few_words(t), "--streaming"],
     "fewer than the 2 held out"),
    ("streaming batch too big", lambda i, t: ["--method", "cpt", "--batch-size", "5000", "--streaming"],
     "fewer than 5000 blocks of 32 tokens"),
    ("support with cpt", lambda i, t: ["--method", "cpt", "--kd-support", "64"], "--kd-support only applies"),
    ("support at a temperature", lambda i, t: ["--method", "kd", "--kd-support", "64", "--kd-temperature", "2"],
     "estimates the KL at temperature 1"),
]


@pytest.mark.parametrize("name,extra,message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(inputs, tiny_llama_dir, tmp_path, name, extra, message):
    out = tmp_path / "out"
    args = extra({**inputs, "tiny_llama": tiny_llama_dir}, tmp_path)
    base = ["retrain", "-m", inputs["pruned"], "--data", inputs["text"], *QUICK, "--out", out]
    result = run_cli(*base, *args)
    assert result.exit_code == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert not out.exists() and not (tmp_path / "out.checkpoints").exists()


def test_streaming_needs_a_budget(inputs, tmp_path):
    at = QUICK.index("--max-steps")
    args = QUICK[:at] + QUICK[at + 2:]
    result = run_cli("retrain", "--method", "cpt", "-m", inputs["pruned"], "--data", inputs["text"], *args,
                     "--streaming", "--out", tmp_path / "o")
    assert result.exit_code == 2 and "--streaming needs --max-steps or --max-tokens" in result.stderr
    assert not (tmp_path / "o").exists()


def test_streaming_end_to_end(inputs, tmp_path):
    out = tmp_path / "healed"
    result = run_cli("retrain", "--method", "cpt", "-m", inputs["pruned"], "--data", inputs["text"], *QUICK,
                     "--streaming", "--out", out, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["finished"] and report["tokens_seen"] == 2 * 2 * 32
    data = json.loads((out / "shortllm.json").read_text())["results"]["data"]
    assert data["streaming"] is True and data["eval_rows"] == 2 and data["train_rows"] is None
    AutoModelForCausalLM.from_pretrained(out)


def test_non_empty_out_is_refused(inputs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = run_cli("retrain", "--method", "cpt", "-m", inputs["pruned"], "--data", inputs["text"], *QUICK,
                     "--out", out)
    assert result.exit_code == 2 and "is not empty" in result.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_stop_then_resume_through_the_cli(inputs, tmp_path):
    common = ["retrain", "--method", "cpt", "-m", inputs["pruned"], "--data", inputs["text"], *QUICK,
              "--out", tmp_path / "o", "--json"]
    args = [*common, "--max-steps", "4"]
    first = run_cli(*args, "--stop-after", "2")
    assert first.exit_code == 0 and not json.loads(first.stdout)["finished"]
    again = run_cli(*args)
    assert again.exit_code == 2 and "--resume" in again.stderr
    other = run_cli(*common, "--max-steps", "5", "--resume")
    assert other.exit_code == 2 and "another run (total_steps: 4 there, 5 now)" in other.stderr
    done = run_cli(*args, "--resume")
    assert done.exit_code == 0 and json.loads(done.stdout)["steps"] == 4


@pytest.mark.slow
def test_kd_on_the_embedded_model(tmp_path):
    """Prune the real embedded model, then distil it from the unpruned one named in the manifest."""
    pruned = tmp_path / "pruned"
    assert run_cli("prune", "--blocks", "21-27", "--device", "cpu", "--out", pruned).exit_code == 0
    result = run_cli("retrain", "--method", "kd", "-m", pruned, "--data", "pydoc:test", "--seq-len", "32",
                     "--batch-size", "1", "--max-steps", "2", "--max-eval-rows", "1", "--device", "cpu",
                     "--out", tmp_path / "healed", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["teacher"] == "smollm2-135m" and report["steps"] == 2
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "healed")
    assert model.config.num_hidden_layers == 23
