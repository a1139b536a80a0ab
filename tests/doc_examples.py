"""Find every ``shortllm`` command that the README, docs/*.md and the ``--help`` texts show, shrink it, and run it.

Used by tests/test_examples.py, which says what is run, what is only parsed, and what is shrunk (the tables are
here: ``SHRINK`` and ``parse_only_reason``). Nothing here needs the network or /work/shared: the embedded
model is replaced by a tiny random model with a tokenizer placed in a temporary shortllm cache, and the data
directory is a tiny copy of the documented offline layout (``write_offline_data``).
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from shortllm.cli.click_errors import click_module

UsageError = click_module().UsageError  # used by tests/test_examples.py

ROOT = Path(__file__).resolve().parent.parent
SHELL_LANGUAGES = {"", "bash", "sh", "shell", "console", "zsh"}
# Words that may come before ``shortllm`` on a line and still leave a shortllm command (``OMP_NUM_THREADS=1``
# and other variable assignments are skipped too).
WRAPPERS = (("/usr/bin/time", "-v"), ("time",))
MODEL_OPTIONS = ("model", "teacher", "scores")  # options whose relative paths are other examples' outputs
# Files the offline world provides to any example that names them: docs/gguf.md's `-m model.gguf` is a tiny GGUF of
# the tiny demo model (quantized Q8_0 with gguf-py, readable by llama.cpp and transformers).
PROVIDED = ("model.gguf",)
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
DATA_DIR = "../shared/data"  # where the examples say the data directory is, seen from the folder they run in

# How each example is shrunk before it runs, per verb: option -> (value, added when the example lacks it).
# Only sizes change (steps, tokens, items, windows, repeats): never the model, data, method or criterion.
# The verbs' defaults are sized for real runs, so a few sizes are also added where an example leaves them out.
SHRINK: dict[str, dict[str, tuple[str, bool]]] = {
    "score": {"samples": ("2", True), "seq_len": ("32", True)},
    "prune": {"samples": ("2", True), "seq_len": ("32", True), "replace_samples": ("2", True)},
    # lora rows start with the Alpaca prompt (up to 138 tokens with the tiny tokenizer): 160 leaves room for output
    "retrain": {"max_steps": ("2", True), "max_tokens": ("512", False), "seq_len": ("160", True),
                "batch_size": ("2", True), "max_eval_rows": ("2", True)},
    "eval": {"limit": ("2", True), "seq_len": ("32", True), "stride": ("16", False)},
    "bench": {"batch_sizes": ("1,2", True), "prompt_len": ("8", True), "new_tokens": ("4", True),
              "warmup": ("0", True), "repeats": ("1", True)},
}


@dataclass
class Example:
    """One ``shortllm`` command as written somewhere: ``argv`` is what follows ``shortllm``."""

    argv: tuple[str, ...]
    sources: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The command as one shell line."""
        return shlex.join(("shortllm", *self.argv))


def split_commands(line: str) -> list[list[str]]:
    """The shortllm commands of one logical shell line (``a && b``, ``x=1 shortllm ...``, ``# comments``)."""
    lex = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lex.whitespace_split = True
    lex.commenters = "#"
    words, segments = list(lex), [[]]
    for word in words:
        if word and set(word) <= set(";&|"):
            segments.append([])
        else:
            segments[-1].append(word)
    commands = []
    for seg in segments:
        while seg and re.fullmatch(r"[A-Za-z_]\w*=.*", seg[0]):
            seg = seg[1:]
        for wrapper in WRAPPERS:
            if tuple(seg[: len(wrapper)]) == wrapper:
                seg = seg[len(wrapper):]
        if seg and seg[0] == "shortllm":
            commands.append(seg[1:])
    return commands


def logical_lines(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Join lines ending in a backslash with the next (shell continuation); keep the first line's number."""
    out: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for number, text in lines:
        if pending is not None:
            number, text = pending[0], pending[1] + " " + text.strip()
        if text.rstrip().endswith("\\"):
            pending = (number, text.rstrip()[:-1].rstrip())
            continue
        pending = None
        out.append((number, text))
    if pending is not None:
        out.append(pending)
    return out


def markdown_commands(text: str, name: str) -> list[tuple[str, list[str]]]:
    """``(source, argv)`` for each shortllm command in the shell code blocks of a markdown text.

    Shell code blocks are fenced blocks with no language or bash/sh/shell/console/zsh; prose and other
    languages (python, json) are not commands.
    """
    found, block, language = [], None, ""
    for number, line in enumerate(text.splitlines(), start=1):
        fence = re.match(r"\s*(```|~~~)\s*([\w+-]*)", line)
        if fence:
            if block is None:
                block, language = [], fence.group(2).lower()
            else:
                if language in SHELL_LANGUAGES:
                    for start, logical in logical_lines(block):
                        found += [(f"{name}:{start}", argv) for argv in split_commands(logical.lstrip("$ "))]
                block = None
            continue
        if block is not None:
            block.append((number, line))
    return found


def help_commands(help_text: str, name: str) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """The commands of a help text's "Examples:" section, and the lines there that are not commands.

    A line that does not start with ``shortllm`` (after a continuation is joined) is reported: it is an
    example that click re-wrapped (it would break when pasted into a shell) or text that does not belong.
    """
    lines = help_text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == "Examples:"]
    if not starts:
        return [], [f"{name}: no 'Examples:' section"]
    section = []
    for i in range(starts[0] + 1, len(lines)):
        if lines[i].strip() and not lines[i].startswith(" "):
            break  # "Options:", "Commands:"
        if not lines[i].strip() and any(t.strip() for _, t in section):
            break  # the examples are one block; the help's description goes on after it
        section.append((i + 1, lines[i]))
    found, bad = [], []
    for number, logical in logical_lines([(n, t) for n, t in section if t.strip()]):
        commands = split_commands(logical.strip())
        if logical.strip().startswith("shortllm ") or logical.strip() == "shortllm":
            found += [(f"{name} (line {number})", argv) for argv in commands]
        else:
            bad.append(f"{name}: {logical.strip()!r}")
    return found, bad


@functools.lru_cache(maxsize=None)
def click_command():
    """The click group behind the ``shortllm`` Typer app (built once: building it takes a while)."""
    import typer.main

    from shortllm.cli.app import app

    return typer.main.get_command(app)


def help_text(args: list[str]) -> str:
    """What ``shortllm ARGS --help`` prints (in-process)."""
    from typer.testing import CliRunner

    from shortllm.cli.app import app

    result = CliRunner().invoke(app, [*args, "--help"], terminal_width=80)
    assert result.exit_code == 0, result.output
    return result.output


def collect_examples() -> tuple[list[Example], list[str]]:
    """Every distinct shortllm command of README.md, docs/*.md and the help texts, in that order, and the
    help lines that are not commands (wrapped or stray)."""
    found: list[tuple[str, list[str]]] = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        found += markdown_commands(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    bad: list[str] = []
    for verb in ["", *click_command().commands]:
        name = f"shortllm {verb} --help".replace("  ", " ")
        commands, stray = help_commands(help_text([verb] if verb else []), name)
        found += commands
        bad += stray
    examples: dict[tuple[str, ...], Example] = {}
    for source, argv in found:
        examples.setdefault(tuple(argv), Example(tuple(argv))).sources.append(source)
    return list(examples.values()), bad


# --- parsing ---------------------------------------------------------------------------------------------


def parse(argv: tuple[str, ...]):
    """Parse ``shortllm ARGV`` with click as the command line would (every option exists, every value
    converts, every option given is one the run reads: cli/applies.py), without running it; returns the verb's
    click context. Raises ``UsageError`` or ``OptionError`` otherwise."""
    from shortllm.cli import applies

    group = click_command()
    ctx = group.make_context("shortllm", list(argv))
    rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
    name, command, args = group.resolve_command(ctx, rest)
    verb_ctx = command.make_context(name, args, parent=ctx)
    applies.check_given(verb_ctx, applies.BY_VERB.get(name, []))
    return verb_ctx


def _reads(argv: list[str]) -> bool:
    """Whether every option of ``shortllm ARGV`` is one the run reads (sizes are added only where they are)."""
    from shortllm.errors import OptionError

    try:
        parse(tuple(argv))
    except OptionError:
        return False
    return True


def options(argv: tuple[str, ...]) -> tuple[str, list[tuple[str, str, str | None]]]:
    """``(verb, [(param name, option as written, value or None for flags), ...])`` of ``shortllm ARGV``."""
    group = click_command()
    start = next(i for i, word in enumerate(argv) if not word.startswith("-"))  # after -v, -q
    verb, rest = argv[start], list(argv[start + 1:])
    command = group.commands[verb]
    by_opt = {opt: p for p in command.params for opt in [*p.opts, *p.secondary_opts]}
    out, i = [], 0
    while i < len(rest):
        word, value = rest[i], None
        if word.startswith("--") and "=" in word:
            word, value = word.split("=", 1)
        param = by_opt.get(word)
        positional = [p for p in command.params if not p.opts or not p.opts[0].startswith("-")]
        if param is None and not word.startswith("-") and positional:  # `shortllm run RECIPE`
            out.append((positional[0].name, word, None))
            i += 1
            continue
        if param is None:
            raise ValueError(f"unknown option {word!r} in {shlex.join(argv)}")
        if getattr(param, "is_flag", False) or getattr(param, "count", False):
            out.append((param.name, word, None))
            i += 1
            continue
        if value is None:
            if i + 1 == len(rest):
                raise ValueError(f"option {word!r} has no value in {shlex.join(argv)}")
            value, i = rest[i + 1], i + 1
        out.append((param.name, word, value))
        i += 1
    return verb, out


def values(argv: tuple[str, ...], *names: str) -> list[str]:
    """Every value given to the parameters ``names`` (click names, e.g. ``model``) in ``shortllm ARGV``."""
    return [v for name, _, v in options(argv)[1] if name in names and v is not None]


def shrink(argv: tuple[str, ...]) -> tuple[str, ...]:
    """``argv`` with the sizes of ``SHRINK`` put in (see the table): what the test really runs."""
    verb, given = options(argv)
    table = SHRINK.get(verb, {})
    out = [*argv[: argv.index(verb)], verb]
    for name, written, value in given:
        out += [written] if value is None else [written, table[name][0] if name in table else value]
    names = {name for name, _, _ in given}
    for name, (value, add) in table.items():
        if add and name not in names and not (name == "max_steps" and "max_tokens" in names):
            added = [*out, "--" + name.replace("_", "-"), value]
            out = added if _reads(added) else out
    return tuple(out)


def local_name(spec: str) -> str:
    """``pruned/`` and ``./pruned`` are the same folder."""
    return os.path.normpath(spec)


def inputs(argv: tuple[str, ...]) -> list[str]:
    """The folders an example reads that other examples write: relative model, teacher and scores paths."""
    names = []
    for spec in values(argv, *MODEL_OPTIONS):
        if spec == "smollm2-135m" or spec in PROVIDED or is_hub_id(spec) or spec.startswith(("/", "~", "..", "$")):
            continue
        names.append(local_name(spec))
    return names


def output(argv: tuple[str, ...]) -> str | None:
    """The folder an example writes (``--out``), or None."""
    outs = values(argv, "out")
    return local_name(outs[0]) if outs else None


def manifest_of(cwd: Path, out: str) -> Path:
    """Where an example's manifest is: ``OUT/shortllm.json``, or ``NAME.shortllm.json`` beside a ``NAME.gguf``."""
    path = cwd / out
    return path.with_name(path.stem + ".shortllm.json") if out.endswith(".gguf") else path / "shortllm.json"


def is_hub_id(spec: str) -> bool:
    """``Qwen/Qwen2.5-0.5B``: an id on the Hugging Face hub, not a local path."""
    return bool(HUB_ID.fullmatch(spec)) and not spec.startswith(".")


def parse_only_reason(argv: tuple[str, ...], producers: dict[str, Example], cuda: bool) -> str | None:
    """Why an example cannot run here, or None when it runs. The only reasons: it needs the hub (a hub
    model, a hub dataset, a named dataset streamed from the hub), a CUDA GPU, or the output of such an example."""
    for spec in values(argv, *MODEL_OPTIONS):
        if is_hub_id(spec):
            return f"model {spec} is on the Hugging Face hub only"
    if "cuda" in values(argv, "device") and not cuda:
        return "needs a CUDA GPU"
    from shortllm.data import KNOWN_DATASETS

    given = {name for name, _, _ in options(argv)[1]}
    for spec in values(argv, "data", "eval_data"):
        if spec.startswith("hf:"):
            return f"dataset {spec} is on the Hugging Face hub only"
        if spec.split(":")[0] in KNOWN_DATASETS and "streaming" in given and "data_dir" not in given:
            return f"streams {spec} from the Hugging Face hub (no --data-dir)"
    for name in inputs(argv):
        producer = producers.get(name)
        if producer is not None and parse_only_reason(producer.argv, producers, cuda):
            return f"reads {name}, which only a parse-only example makes"
    return None


def producers_of(examples: list[Example]) -> dict[str, Example]:
    """Folder name -> the first example that writes it with ``--out`` (dry runs write nothing)."""
    made: dict[str, Example] = {}
    for example in examples:
        try:
            parse(example.argv)
        except UsageError:
            continue  # its own test fails
        name = output(example.argv)
        if name is not None and "--dry-run" not in example.argv:
            made.setdefault(name, example)
    return made


# --- the offline world: a tiny model and a tiny data directory --------------------------------------------


def write_tiny_demo_model(cache: Path) -> Path:
    """Put a tiny random 30-block llama with its own tokenizer where the embedded model's converted copy
    lives (``$SHORTLLM_CACHE/models/smollm2-135m``): ``-m smollm2-135m`` and the default then load it.
    30 blocks as the real model, so block numbers in the examples (``--blocks 20,21``, ``-k 7``) mean the same."""
    from tests.training.helpers import make_tiny_model_with_tokenizer

    from shortllm.models.demo import DEMO_ALIAS

    target = cache / "models" / DEMO_ALIAS
    target.mkdir(parents=True)
    return make_tiny_model_with_tokenizer(target, num_layers=30)


def write_offline_data(root: Path) -> Path:
    """A tiny data directory with every file of the documented offline layout (shared/data/README.md):
    WikiText-2 valid/test (no train split, as there), PTB, the seven tasks, the C4 slice, the Gutenberg book
    and the Alpaca subset, under the same names."""
    from pydoc_data.topics import topics

    from tests.evaluation.helpers import write_data_dir

    write_data_dir(root)
    answers = [json.loads(line)["answer"] for line in (root / "winogrande" / "dev.jsonl").read_text().splitlines()]
    (root / "winogrande" / "dev-labels.lst").write_text("".join(f"{a}\n" for a in answers))
    texts = [topics[k] for k in sorted(topics)[:24]]
    pretrain = root / "pretrain"
    pretrain.mkdir()
    (pretrain / "c4_en_train_first1000.jsonl").write_text(
        "".join(json.dumps({"text": t, "timestamp": "2019-04-25 12:57:54", "url": f"https://example.com/{i}"}) + "\n"
                for i, t in enumerate(texts)), encoding="utf-8")
    (pretrain / "gutenberg_2600_war_and_peace.txt").write_text(
        "The Project Gutenberg EBook of War and Peace\n\n" + "\n\n".join(texts[::-1]) + "\n", encoding="utf-8")
    alpaca = root / "alpaca"
    alpaca.mkdir()
    records = [{"instruction": f"Give a synonym of the word number {i}.", "input": "" if i % 2 else f"word {i}",
                "output": f"Here is a word that means the same as number {i}."} for i in range(40)]
    (alpaca / "alpaca_data_1k.json").write_text(json.dumps(records, indent=1), encoding="utf-8")
    return root


# --- running ---------------------------------------------------------------------------------------------


@dataclass
class Run:
    """One example run: the shrunk command, where it ran, what it wrote, and click's result."""

    argv: tuple[str, ...]
    cwd: Path
    out: str | None
    exit_code: int
    output: str
    error: str
    cpu_s: float

    def report(self) -> str:
        """What a failing test prints."""
        return (f"shortllm {shlex.join(self.argv)}\n(in {self.cwd}) exited {self.exit_code}\n"
                f"--- output ---\n{self.output[-4000:]}\n{self.error}")


def run_key(argv: tuple[str, ...]) -> tuple[str, ...]:
    """Examples equal once shrunk, apart from the name of their output folder, run once."""
    verb, given = options(shrink(argv))
    return (verb, *(f"{written}={'<out>' if name == 'out' else value}" for name, written, value in given))


class ExampleRunner:
    """Runs shrunk examples in-process, each in its own fresh folder beside the data directory, after the
    examples that write the folders it reads (memoised: each distinct shrunk command runs once)."""

    def __init__(self, root: Path, examples: list[Example], env: dict[str, str | None]):
        self.root, self.env = root, env
        self.producers = producers_of(examples)
        self.runs: dict[tuple[str, ...], Run] = {}

    def run(self, argv: tuple[str, ...]) -> Run:
        """Run ``shortllm shrink(ARGV)`` (the examples that make its inputs first), or return the run of an
        example that shrinks to the same command."""
        key = run_key(argv)
        if key in self.runs:
            return self.runs[key]
        links = {}
        for name in inputs(argv):
            producer = self.producers.get(name)
            if producer is None:
                raise AssertionError(f"`shortllm {shlex.join(argv)}` reads {name}, which no example writes")
            made = self.run(producer.argv)
            if made.exit_code != 0:
                raise AssertionError(f"{name}, read by `shortllm {shlex.join(argv)}`, was not made:\n"
                                     + made.report())
            links[name] = made.cwd / made.out
        cwd = self.root / f"run-{len(self.runs):03d}"
        cwd.mkdir()
        for spec in values(argv, *MODEL_OPTIONS):
            if spec in PROVIDED and not (cwd / spec).exists():
                (cwd / spec).symlink_to(self.provided(spec))
        for name, target in links.items():
            (cwd / name).parent.mkdir(parents=True, exist_ok=True)
            (cwd / name).symlink_to(target, target_is_directory=True)
        shrunk = tuple(DATA_DIR if w in ("$SHORTLLM_DATA_DIR", "${SHORTLLM_DATA_DIR}") else w for w in shrink(argv))
        self.runs[key] = self._invoke(shrunk, cwd)
        return self.runs[key]

    def provided(self, name: str) -> Path:
        """Make the file ``name`` of ``PROVIDED`` once, beside the example folders."""
        from tests.formats.tiny_gguf import hf_llama_to_gguf

        from shortllm.models.demo import DEMO_ALIAS

        path = self.root / "provided" / name
        if not path.exists():
            path.parent.mkdir(exist_ok=True)
            hf_llama_to_gguf(self.root / "cache" / "models" / DEMO_ALIAS, path)
        return path

    def _invoke(self, argv: tuple[str, ...], cwd: Path) -> Run:
        from typer.testing import CliRunner

        from shortllm.cli.app import app

        before, cpu = Path.cwd(), time.process_time()
        os.chdir(cwd)
        try:
            result = CliRunner(env=self.env).invoke(app, list(argv))
        finally:
            os.chdir(before)
        error = ""
        if result.exc_info is not None and not isinstance(result.exception, SystemExit):
            error = "".join(traceback.format_exception(*result.exc_info))
        return Run(argv, cwd, output(argv), result.exit_code, result.output, error, time.process_time() - cpu)
