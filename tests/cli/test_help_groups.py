"""Each verb's --help starts with its commonest commands and lists its options in named groups."""

from __future__ import annotations

import re

import pytest

from shortllm.cli.help import OTHER
from shortllm.pipeline.verbs import command
from tests.conftest import run_cli

VERBS = ["inspect", "score", "prune", "retrain", "eval", "bench", "run"]


def sections(text: str) -> list[str]:
    """The section headers of a click help text, in order."""
    return [line[:-1] for line in text.splitlines() if re.fullmatch(r"[A-Z-][^ ].*:", line)]


@pytest.mark.parametrize("verb", VERBS)
def test_the_examples_come_first_and_every_option_has_a_group(verb):
    result = run_cli(verb, "--help")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    first_example = next(i for i, line in enumerate(lines) if line.strip().startswith(f"shortllm {verb}"))
    paragraphs_before = "\n".join(lines[2:first_example]).count("\n\n")
    assert paragraphs_before <= 1, lines[:first_example]  # the one-line summary, then "Examples:"
    ungrouped = [p.name for p in command(verb).params
                 if not getattr(p, "rich_help_panel", None) and p.param_type_name == "option"]
    assert ungrouped == [], ungrouped  # only --help (added by click) is left to "Other options"
    tail = ["Output", OTHER] if verb == "run" else ["Model and loading", "Output", OTHER]
    assert sections(result.stdout)[-len(tail):] == tail


def test_retrain_groups_its_many_options_in_order():
    result = run_cli("retrain", "--help")
    assert sections(result.stdout)[-10:] == [
        "Method and data", "Optimisation", "LoRA (--method lora)", "Distillation (--method kd)",
        "What to train (cpt, kd)", "Checkpoints and evaluation", "Memory and precision", "Model and loading",
        "Output", OTHER]


def test_a_shared_option_shows_under_each_verbs_own_group():
    def group_of(verb: str, name: str) -> str:
        return next(p.rich_help_panel for p in command(verb).params if p.name == name)

    assert group_of("score", "data_dir") == "Calibration"  # as defined once in cli/options.py
    assert group_of("retrain", "data_dir") == "Method and data"
    assert group_of("eval", "data_dir") == "Data and sizes"
    assert group_of("prune", "seed") == "Calibration" and group_of("retrain", "seed") == "Optimisation"
