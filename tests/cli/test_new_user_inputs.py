"""Inputs a new user gets wrong: each is one line naming what is there and what is missing, exit 2, nothing
written, the input untouched."""

from __future__ import annotations

import shutil

from tests.cli.test_bad_input import assert_one_line_error
from tests.conftest import run_cli, tree_digest


def test_a_folder_with_only_a_config_says_the_weights_are_missing(tiny_llama_dir, tmp_path):
    src = tmp_path / "only-config"
    src.mkdir()
    shutil.copy(tiny_llama_dir / "config.json", src)
    before = tree_digest(src)
    for verb in (["prune", "-b", "1"], ["score", "-c", "magnitude"]):
        result = run_cli(*verb, "-m", src, "--out", tmp_path / "o")
        assert_one_line_error(result, "has no weight files: it holds config.json but no model.safetensors")
        assert "pickled" not in result.stderr
    assert tree_digest(src) == before and not (tmp_path / "o").exists()


def test_a_missing_gguf_is_named_missing(tmp_path):
    for out in ("o.gguf", "o"):
        result = run_cli("prune", "-m", tmp_path / "missing.gguf", "-b", "1", "--out", tmp_path / out)
        assert_one_line_error(result, "no such GGUF file")
        assert not (tmp_path / out).exists()


def test_quiet_and_verbose_together_are_refused():
    result = run_cli("-q", "-v", "inspect")
    assert_one_line_error(result, "--quiet and --verbose ask for opposite things")


def test_an_output_below_a_file_names_the_file(tiny_llama_dir, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    result = run_cli("prune", "-m", tiny_llama_dir, "-b", "1", "--out", afile / "sub")
    assert_one_line_error(result, f"{afile} is a file, not a folder")
    assert afile.read_text() == "x"


def test_click_usage_errors_are_one_line_with_the_verbs_help():
    for argv, message, verb in [(["prune", "--ratioo", "0.2"], "No such option: --ratioo", "prune"),
                                (["score", "--samples"], "Option '--samples' requires an argument.", "score"),
                                (["retrain"], "Missing option '--method'", "retrain"),
                                (["evaluate"], "No such command 'evaluate'.", None)]:
        result = run_cli(*argv)
        assert_one_line_error(result, message, f"Try 'shortllm{' ' + verb if verb else ''} --help'.")


def test_text_field_for_a_named_dataset_is_refused(tiny_tok_dir, tmp_path):
    result = run_cli("score", "-m", tiny_tok_dir, "-c", "bi", "--data", "pydoc", "--samples", "2", "--seq-len", "16",
                     "--text-field", "nope", "--out", tmp_path / "s")
    assert_one_line_error(result, "--text-field nope does not apply to 'pydoc'")
    assert not (tmp_path / "s").exists()


def test_a_failed_run_leaves_no_folder_it_created(tiny_llama_dir, tmp_path, monkeypatch):
    from shortllm.errors import ShortLLMError
    from shortllm.pruning import export

    def broken(*args, **kwargs):
        raise ShortLLMError("the reload check failed")

    monkeypatch.setattr(export, "verify_reload", broken)
    work = tmp_path / "work"
    work.mkdir()
    result = run_cli("-q", "prune", "-m", tiny_llama_dir, "-b", "1", "--out", work / "a b" / "ünï [x]" / "out")
    assert_one_line_error(result, "the reload check failed")
    assert list(work.iterdir()) == []  # neither the output nor the folders made for it


def test_an_empty_out_is_called_empty(tiny_llama_dir):
    for value in ("", "  "):
        result = run_cli("prune", "-m", tiny_llama_dir, "-b", "1", "--out", value)
        assert_one_line_error(result, "--out is empty")


def test_a_refusal_keeps_the_librarys_whole_reason(tmp_path):
    import json

    from tests.tiny_models import tiny_config

    config = tiny_config("exaone4", num_layers=4).to_dict()
    config["layer_types"] = ["full_attention"] * 5  # one more than there are layers
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    result = run_cli("inspect", "-m", tmp_path / "m")
    assert_one_line_error(result, "validate_layer_type", "(4) must be equal to the number of `layer_types` (5)")


def test_dtype_auto_keeps_the_stored_tensors_on_every_path(tmp_path):
    import json

    import torch
    from safetensors.torch import load_file

    from tests.tiny_models import tiny_model

    src = tmp_path / "src"
    tiny_model("llama").to(torch.float16).save_pretrained(src)
    config = json.loads((src / "config.json").read_text())
    config["dtype"] = "bfloat16"  # the config disagrees with the stored float16 tensors
    (src / "config.json").write_text(json.dumps(config))
    copied = run_cli("prune", "-m", src, "--blocks", "2", "--out", tmp_path / "copied")  # out-of-core
    assert copied.exit_code == 0, copied.output
    loaded = run_cli("prune", "-m", src, "--num-blocks", "1", "-c", "chop", "--out", tmp_path / "loaded")
    assert loaded.exit_code == 0, loaded.output
    assert "config.json says dtype bfloat16 but the weights are stored in float16" in loaded.stderr
    a, b = (load_file(tmp_path / name / "model.safetensors") for name in ("copied", "loaded"))
    assert set(a) == set(b)
    for name in a:
        assert a[name].dtype == b[name].dtype == torch.float16, name
        assert torch.equal(a[name], b[name]), name


def test_an_out_no_folder_can_be_made_in_is_refused_before_the_work(monkeypatch):
    """Permission bits pass for root in /proc: the folder was found unusable only after the scoring (minutes)."""
    import shortllm.scoring.run as score_run

    def never(*args, **kwargs):
        raise AssertionError("scored before the --out check")

    monkeypatch.setattr(score_run, "score_loaded", never)
    result = run_cli("score", "--out", "/proc/shortllm-out", "--device", "cpu")
    assert_one_line_error(result, "cannot write to /proc/shortllm-out: /proc does not take new folders")
