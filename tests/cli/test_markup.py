"""Brackets and colons are text, not rich markup: every --help, and every printed path, spec or label.

Rich reads ``[x]`` as a style tag and ``:name:`` as an emoji code. A help string with ``[/CONFIG]`` once
crashed ``--help``; ``[default: ...]`` vanished from ``eval --help``; ``--out 'runs[/x]'`` wrote the model and
then crashed; ``--out 'v[red]2'`` printed a wrong path.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from tests.conftest import run_cli
from tests.training.helpers import make_tiny_model_with_tokenizer, write_small_text

# A closing tag (and a path separator inside it), an opening tag, an emoji code, a tag at the start.
ODD_NAMES = ["runs[/x]", "v[red]2", "e:thumbs_up:x", "[bold]b"]
VERBS = ["inspect", "score", "prune", "retrain", "eval", "bench"]
DATA_SPEC = "hf:OWNER/NAME[/CONFIG][:SPLIT]"


def squash(text: str) -> str:
    """Text without whitespace or box lines: help and tables wrap long lines wherever they like."""
    return "".join(text.replace("│", " ").split())


@pytest.fixture(scope="module")
def odd_model(tmp_path_factory) -> Path:
    """A tiny model with its own tokenizer in a folder whose name is rich markup."""
    return make_tiny_model_with_tokenizer(tmp_path_factory.mktemp("markup") / "m[red]1:thumbs_up:")


@pytest.fixture
def wide(monkeypatch):
    """A wide console, so table titles and headers are not folded (the consoles exist already when another
    test imported the CLI first, so their width is set as well as the environment)."""
    from shortllm.cli.output import console, err_console

    monkeypatch.setenv("COLUMNS", "400")
    for con in (console, err_console):
        monkeypatch.setattr(con, "width", 400)


# --- help -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("verb", [None, *VERBS])
def test_help_shows_every_option_help_literally(verb):
    import typer

    from shortllm.cli.app import app

    result = run_cli(*([verb] if verb else []), "--help")
    assert result.exit_code == 0, result.output
    shown = squash(result.stdout)
    command = typer.main.get_command(app)
    if verb:
        command = command.commands[verb]
    assert squash(command.help.split("\f")[0].split("\n\n")[0]) in shown
    for param in command.params:
        if getattr(param, "help", None):
            assert squash(param.help) in shown, f"{param.name}: {param.help!r} is not shown"


@pytest.mark.parametrize("verb", ["score", "prune", "retrain"])
def test_help_shows_the_hf_data_spec(verb):
    result = run_cli(verb, "--help")
    assert result.exit_code == 0, result.output
    assert DATA_SPEC in result.stdout


def test_eval_help_keeps_its_defaults():
    result = run_cli("eval", "--help")
    assert result.exit_code == 0, result.output
    shown = squash(result.stdout)
    for text in ("[default: wikitext2,ptb]", "[default: 128 paper, 2048 sliding]", "[default: paper]",
                 "[default: 512]", "[default: the paper's seven: boolq, piqa, hellaswag, winogrande, arc_easy, "
                 "arc_challenge, openbookqa]", "[default: 8 for tasks; perplexity: 2048 tokens' worth]"):
        assert squash(text) in shown, text


@pytest.mark.parametrize("verb", [None, *(v for v in VERBS if v != "inspect")])  # inspect: no option has one
def test_every_help_lists_defaults(verb):
    result = run_cli(*([verb] if verb else []), "--help")
    assert result.exit_code == 0, result.output
    assert "[default:" in result.stdout


# --- printed paths, specs and labels ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ODD_NAMES)
def test_prune_writes_and_prints_the_literal_out(tiny_llama_dir, tmp_path, name):
    out = tmp_path / name
    result = run_cli("prune", "-m", tiny_llama_dir, "--blocks", "1", "--out", out, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    assert f"Saved to {out} (out-of-core surgery; reload check: max logit diff 0)" in result.stdout


def test_score_then_prune_print_literal_model_scores_and_out(odd_model, tmp_path, wide):
    scores = tmp_path / "sc[/x]"
    result = run_cli("score", "-m", odd_model, "-c", "magnitude", "-k", "1", "--out", scores, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert json.loads((scores / "scores.json").read_text())["criterion"] == "magnitude"
    assert squash(f"magnitude scores of {odd_model}") in squash(result.stdout)
    assert squash("score = weight magnitude: sum of |W| (lower = removed first)") in squash(result.stdout)
    assert f"Saved to {scores}\n" in result.stdout

    out = tmp_path / "p[red]:thumbs_up:"
    result = run_cli("prune", "-m", odd_model, "--scores", scores, "-k", "1", "--out", out, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert f"criterion magnitude from {scores}" in result.stdout
    assert f"Saved to {out} (" in result.stdout and (out / "shortllm.json").is_file()


def test_inspect_prints_the_literal_model(tiny_llama_dir, tmp_path):
    model = tmp_path / "[bold]m[/x]"
    shutil.copytree(tiny_llama_dir, model)
    result = run_cli("inspect", "-m", model)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{model} (LlamaForCausalLM, type llama, dtype float32)\n")


def test_eval_prints_literal_labels_rows_and_out(odd_model, tmp_path, wide):
    text = write_small_text(tmp_path / "t[red]:thumbs_up:.txt")
    out = tmp_path / "ev[/x]"
    result = run_cli("eval", "-m", odd_model, "--ppl", text, "--tasks", "none", "--seq-len", "32", "--limit", "2",
                     "--device", "cpu", "--out", out)
    assert result.exit_code == 0, result.output
    assert (out / "eval.json").is_file()
    table = squash(result.stdout)
    assert squash(odd_model.name) in table and squash(f"ppl {text}") in table
    assert f"Saved to {out}\n" in result.stdout


def test_bench_prints_literal_labels_and_out(tiny_llama_dir, tmp_path, wide):
    model = tmp_path / "b[red]:thumbs_up:"
    shutil.copytree(tiny_llama_dir, model)
    out = tmp_path / "bench[/x]"
    result = run_cli("bench", "-m", model, "--batch-sizes", "1", "--prompt-len", "4", "--new-tokens", "2",
                     "--warmup", "0", "--repeats", "1", "--device", "cpu", "--out", out)
    assert result.exit_code == 0, result.output
    assert (out / "bench.json").is_file()
    assert squash(f"speedups vs {model}") in squash(result.stdout)
    assert f"Saved to {out} (bench.json, bench.png, shortllm.json)" in result.stdout


def test_retrain_prints_the_literal_out(odd_model, tmp_path):
    out = tmp_path / "r[/x]:thumbs_up:"
    result = run_cli("retrain", "--method", "cpt", "-m", odd_model, "--data", write_small_text(tmp_path / "s.txt"),
                     "--seq-len", "32", "--batch-size", "2", "--max-steps", "1", "--max-eval-rows", "2",
                     "--eval-every", "0", "--save-every", "0", "--device", "cpu", "--out", out)
    assert result.exit_code == 0, result.output
    assert (out / "config.json").is_file()
    assert f"Saved the healed model to {out}\n" in result.stdout


# --- progress, spinners and logs ------------------------------------------------------------------------------


ODD_TEXT = "x[/y] [red]z:thumbs_up:"


@pytest.fixture
def terminal(monkeypatch):
    """Route the CLI's stderr console to a buffer that claims to be a terminal, so live displays render."""
    from shortllm.cli import output

    buf = io.StringIO()
    fake = Console(file=buf, force_terminal=True, width=300, emoji=False, markup=False, color_system=None)
    monkeypatch.setattr(output, "err_console", fake)  # every verb's progress display lives in cli/output.py
    monkeypatch.setitem(output.state, "quiet", False)
    return buf


def test_progress_bar_shows_its_description_literally(terminal):
    from shortllm.cli.output import progress_bar

    with progress_bar(ODD_TEXT) as tick:
        tick(1, 2)
    assert ODD_TEXT in terminal.getvalue()


def test_status_shows_its_message_literally(terminal):
    from shortllm.cli.output import status

    with status(ODD_TEXT):
        pass
    assert ODD_TEXT in terminal.getvalue()


def test_bench_progress_shows_model_labels_literally(terminal):
    from shortllm.cli.bench import _progress

    with _progress() as advance:
        advance(1, 2, ODD_TEXT)
    assert ODD_TEXT in terminal.getvalue()


def test_retrain_progress_shows_its_description_literally(terminal):
    from shortllm.cli.retrain import _training_progress

    with _training_progress(ODD_TEXT, quiet=False) as on_step:
        on_step(1, 2, {"loss": 1.0, "lr": 1e-4, "tokens_per_s": 10.0})
    assert ODD_TEXT in terminal.getvalue()


def test_log_messages_are_not_markup(capsys):
    from shortllm.cli.app import main_options

    root = logging.getLogger("shortllm")
    saved = root.handlers[:], root.level, root.propagate
    try:
        main_options(verbose=1, quiet=False, version=False)
        logging.getLogger("shortllm.test").info("reading %s", ODD_TEXT)
    finally:
        root.handlers[:], root.level, root.propagate = saved
    assert ODD_TEXT in capsys.readouterr().err
