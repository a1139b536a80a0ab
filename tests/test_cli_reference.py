"""docs/reference.md is the CLI's own description of its options (scripts/cli_reference.py), so it cannot drift."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import cli_reference  # noqa: E402


def test_the_reference_page_is_the_regenerated_one():
    page = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
    assert page == cli_reference.render()  # run `python scripts/cli_reference.py` after changing an option


def test_every_verb_and_option_is_on_the_page():
    group, _ = cli_reference.click_group()
    page = cli_reference.render()
    for name, command in group.commands.items():
        assert f"\n## {name}\n" in page, name
        for param in command.params:
            for flag in [*getattr(param, "opts", []), *getattr(param, "secondary_opts", [])]:
                if flag.startswith("--"):
                    assert flag in page, (name, flag)


def test_defaults_move_out_of_the_help_text():
    """click's appended bracket and an option's own trailing "[default: ...]" both land in the default column."""
    assert cli_reference.split_help("Random seed.  [default: 1234]") == ("Random seed.", "1234")
    assert cli_reference.split_help("lora | cpt | kd.  [required]") == ("lora | cpt | kd.", "required")
    assert cli_reference.split_help("Windows to fit on [default: linear 64, block 256].") == (
        "Windows to fit on.", "linear 64, block 256")
    assert cli_reference.split_help("Threads.  [env var: X; default: 2]") == ("Threads.  [env var: X]", "2")
    assert cli_reference.split_help("Tasks; 'none' to skip (default: all).") == (
        "Tasks; 'none' to skip (default: all).", "")


def test_table_cells_stay_in_their_column():
    assert cli_reference.cell("ppl | bi, alpha*T^2*KL, `a|b`, <path>") == (
        "ppl \\| bi, alpha\\*T^2\\*KL, `a\\|b`, &lt;path>")
