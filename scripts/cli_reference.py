"""The options reference, docs/reference.md, generated from the CLI itself so that it cannot drift.

    python scripts/cli_reference.py            rewrite docs/reference.md
    python scripts/cli_reference.py --check    exit 1 with one line if docs/reference.md is not what it would write

Each verb gets a section: the first paragraph of its help, then a table of its options read from the registered
click command (flags with their short forms and ``--x/--no-x`` pairs, the value type, the default as ``--help``
shows it, and the help text). Options that declare a help panel (``rich_help_panel``) get a table per panel, in
the order the panels first appear. Nothing is listed by hand: a new verb, option or panel shows up on the next
run, and ``tests/test_cli_reference.py`` fails until the committed page is regenerated.
"""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "reference.md"
# The user page of each verb, linked from its section when the page exists.
PAGES = {"inspect": "architecture.md", "score": "score.md", "prune": "prune.md", "retrain": "retrain.md",
         "eval": "eval.md", "bench": "bench.md", "run": "recipes.md"}
REGENERATE = "python scripts/cli_reference.py"
# What click appends to an option's help: "  [default: X; required]" (typer keeps click's form).
EXTRA = re.compile(r"\s\s\[([^\[\]]*)\]$")
# What an option with show_default=False may say itself at the end of its help: "[default: ...]".
OWN_DEFAULT = re.compile(r"\s*\[default: ([^\[\]]*)\]\.?$")


def click_group():
    """The click group typer builds from the ``shortllm`` app, and a context to render its help with."""
    if str(ROOT / "src") not in sys.path:  # this checkout's CLI, whichever copy of shortllm is installed
        sys.path.insert(0, str(ROOT / "src"))
    import typer.main

    from shortllm.cli.app import app

    group = typer.main.get_command(app)
    return group, group.make_context("shortllm", [], resilient_parsing=True)


def first_paragraph(text: str | None) -> str:
    """The first paragraph of a help text, on one line (click's ``\\b`` no-rewrap markers dropped)."""
    body = inspect.cleandoc(text or "")
    para = body.split("\n\n")[0]
    return " ".join(line.strip() for line in para.splitlines() if line.strip() != "\b")


def code(text: str) -> str:
    """``text`` as a markdown code span that survives a table cell."""
    return "`" + text.replace("|", "\\|") + "`"


def cell(text: str) -> str:
    """Prose for a table cell: pipes escaped; outside code spans ``<`` and ``*`` escaped (no HTML, no emphasis)."""
    parts = text.split("`")
    for i in range(0, len(parts), 2):  # even parts lie outside code spans
        parts[i] = parts[i].replace("<", "&lt;").replace("*", "\\*")
    return "`".join(parts).replace("|", "\\|").replace("\n", " ")


def split_help(help_text: str) -> tuple[str, str]:
    """(help, default) from the help text ``--help`` shows: the default click appends ("[default: X]",
    "[required]") or the one the option's own help ends with moves to the default column; the rest of the
    bracket (an env var, a range) stays with the help."""
    default, rest = "", help_text
    found = EXTRA.search(rest)
    if found:
        kept = []
        for item in found.group(1).split("; "):
            if item.startswith("default: "):
                default = item[len("default: "):]
            elif item == "required":
                default = "required"
            else:
                kept.append(item)
        rest = rest[:found.start()] + (f"  [{'; '.join(kept)}]" if kept else "")
    if not default:
        own = OWN_DEFAULT.search(rest)
        if own:
            default, rest = own.group(1), rest[:own.start()].rstrip()
            rest += "" if rest.endswith((".", ")", "!", "?")) else "."
    return rest.strip(), default


def option_row(param, ctx) -> str | None:
    """One table row for a click parameter, or None for a hidden one."""
    record = param.get_help_record(ctx)
    if record is None:
        return None
    shown, help_text = record
    if getattr(param, "param_type_name", "") == "argument":
        flags, _, value = shown.partition(" ")
        flags = flags.upper()
    else:  # "-o, --out <path>", "--add-bos / --no-add-bos": the flags, then the value's metavar after the last one
        parts = [part.split(", ") for part in re.split(r" / |; ", shown)]
        value = parts[0][-1].partition(" ")[2]
        flags = " / ".join(", ".join(opts[:-1] + [opts[-1].partition(" ")[0]]) for opts in parts)
    kind = code(value) if value else ("count" if param.count else "flag")
    if getattr(param, "multiple", False):
        kind += ", repeatable"
    help_text, default = split_help(help_text)
    default = code(default) if default and " " not in default and default != "required" else cell(default)
    return f"| {code(flags)} | {kind} | {default} | {cell(help_text)} |"


def options_tables(command, ctx) -> list[str]:
    """The options of a command as markdown tables, one per help panel (one in all when none is declared), in the
    order ``--help`` shows them (``shortllm.cli.help.in_order``)."""
    from shortllm.cli.help import OTHER, in_order

    panels: dict[str, list[str]] = {}
    for param in command.params:
        row = option_row(param, ctx)
        if row is not None:
            panels.setdefault(getattr(param, "rich_help_panel", None) or OTHER, []).append(row)
    lines: list[str] = []
    for panel in in_order(panels):
        if len(panels) > 1:
            lines += [f"**{panel}**", ""]
        lines += ["| option | value | default | what it does |", "|---|---|---|---|", *panels[panel], ""]
    return lines


def render() -> str:
    """docs/reference.md as the CLI would describe itself now."""
    group, gctx = click_group()
    verbs = {name: command for name, command in group.commands.items() if not getattr(command, "hidden", False)}
    lines = ["# Options reference", "",
             "<!-- Generated from the CLI by `" + REGENERATE + "`: do not edit by hand. -->", "",
             "Every option of every verb, as `shortllm VERB --help` gives it. The verb pages say when to use "
             "which; this page says what each option is. Global options go before the verb "
             "(`shortllm -q prune ...`).", "",
             "Verbs: " + ", ".join(f"[{name}](#{name})" for name in verbs) + ".", "",
             "## Global options", "", *options_tables(group, gctx)]
    for name, command in verbs.items():
        ctx = command.make_context(name, [], parent=gctx, resilient_parsing=True)
        lines += [f"## {name}", "", f"`shortllm {name}`: {first_paragraph(command.help)}", ""]
        page = PAGES.get(name)
        if page and (ROOT / "docs" / page).is_file():
            lines += [f"How to use it: [{page}]({page}).", ""]
        lines += options_tables(command, ctx)
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if argv == ["--check"]:
        if not PAGE.is_file() or PAGE.read_text(encoding="utf-8") != text:
            print(f"docs/reference.md differs from the CLI's options: run `{REGENERATE}`")
            return 1
        return 0
    if argv:
        print("usage: python scripts/cli_reference.py [--check]", file=sys.stderr)
        return 2
    PAGE.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
