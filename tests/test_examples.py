"""Every ``shortllm`` command shown to users runs as written (shrunk), or, where it cannot run here, parses.

Where the commands come from: the shell code blocks of README.md and docs/*.md (fenced blocks with no language
or bash/sh/shell/console/zsh; ``a && b`` is two commands, ``\\`` continues a line, ``# ...`` is a comment,
``VAR=1`` and ``/usr/bin/time -v`` before ``shortllm`` are skipped), and the "Examples:" section of
``shortllm --help`` and of every verb's ``--help``, as printed at 80 columns (a line there that is not a
whole command, e.g. one that click re-wrapped, fails the test: it would break when pasted).

How they run (tests/doc_examples.py), offline, in-process with typer's CliRunner, each in a fresh folder:

* **Model.** The embedded model (``-m smollm2-135m`` or no ``-m``) is a tiny random 30-block llama with its
  own tokenizer, placed where the converted embedded model lives in a temporary ``$SHORTLLM_CACHE``.
* **Data.** ``../shared/data`` (and ``$SHORTLLM_DATA_DIR`` where written) is a tiny copy of the documented
  offline layout (shared/data/README.md: same file names; WikiText-2 without its train split, as there),
  built in the temporary folder beside the folders the examples run in. ``SHORTLLM_DATA_DIR`` is unset and
  the hub is off (``HF_HUB_OFFLINE=1``), so an example that needs data must say where it is.
* **Folders made by other examples** (``-m pruned/``, ``--scores sleb/``, ``-m healed/``) are the outputs of
  the first example that writes them (``--out``), run first and linked in. Examples that shrink to the same
  command, apart from the name of their ``--out`` folder, run once.
* **Skipped:** lm-eval's description of the machine after each model (``add_env_info``: torch's collect_env,
  a dozen subprocesses); shortllm keeps nothing of it.
* **Shrinking** (``SHRINK`` in tests/doc_examples.py, shown below): only sizes change (steps, tokens, items,
  windows, calibration samples, repeats, new tokens); model, data, method, criterion and blocks stay.

  ===========  ==================================================================================
  verb         options set to (+: also added when the example leaves the option out)
  ===========  ==================================================================================
  score/prune  --samples 2+, --seq-len 32+
  retrain      --max-steps 2+ (not added with --max-tokens), --max-tokens 512, --seq-len 160+,
               --batch-size 2+, --max-eval-rows 2+
  eval         --limit 2+, --seq-len 32+, --stride 16
  bench        --batch-sizes 1,2+, --prompt-len 8+, --new-tokens 4+, --warmup 0+, --repeats 1+
  ===========  ==================================================================================

* **Parse only** (click parses the command: every option exists and every value converts; nothing runs)
  for exactly these reasons (``parse_only_reason``): a model on the hub (``Qwen/...``), a hub dataset
  (``hf:...``, or a named dataset streamed without ``--data-dir``), ``--device cuda`` without a GPU, or a
  folder that only such an example makes. Any other example that cannot run fails, and so does a new example
  that does not parse.
"""

from __future__ import annotations

import gc
import json
import shlex
from pathlib import Path

import pytest

from tests import doc_examples as dx

EXAMPLES, STRAY_HELP_LINES = dx.collect_examples()


def _id(example: dx.Example) -> str:
    return example.sources[0].replace(" ", "_")


@pytest.fixture(scope="module")
def runner(tmp_path_factory) -> dx.ExampleRunner:
    """The offline world of the module docstring, shared by every example (one tiny model, one data dir)."""
    import lm_eval.evaluator
    import torch

    root = tmp_path_factory.mktemp("examples")
    dx.write_tiny_demo_model(root / "cache")
    dx.write_offline_data(root / "shared" / "data")
    env = {"SHORTLLM_CACHE": str(root / "cache"), "SHORTLLM_DATA_DIR": None, "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "SHORTLLM_DEBUG": None}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only wait for each other on a busy machine
    gc.freeze()  # bench collects garbage before each timed run: skip the test session's long-lived objects
    with pytest.MonkeyPatch.context() as patch:
        # lm-eval describes the machine after every model (torch's collect_env: a dozen subprocesses, about
        # 1.7 s each time on this machine); shortllm keeps nothing of it, so the examples skip it.
        patch.setattr(lm_eval.evaluator, "add_env_info", lambda results: None)
        yield dx.ExampleRunner(root, EXAMPLES, env)
    gc.unfreeze()
    torch.set_num_threads(threads)


def test_examples_are_found_everywhere():
    """The extraction sees the README, the docs pages with commands, and two or more examples per --help."""
    sources = {s.split(":")[0].split(" (line")[0] for e in EXAMPLES for s in e.sources}
    assert {"README.md", "docs/retrain.md", "docs/score.md", "docs/eval.md", "docs/bench.md"} <= sources
    helps = [s for e in EXAMPLES for s in e.sources if s.startswith("shortllm ")]
    for verb in dx.click_command().commands:
        assert sum(h.startswith(f"shortllm {verb} --help") for h in helps) >= 2, verb
    assert sum(h.startswith("shortllm --help") for h in helps) >= 3


def test_help_examples_are_whole_commands():
    """Each line of every "Examples:" section is one command (or a backslash-continued part of one)."""
    assert STRAY_HELP_LINES == []


def test_extraction_reads_shell_like_a_shell():
    """Continuations, ``&&``, comments, variable assignments and wrappers; prose and python are skipped."""
    text = "\n".join([
        "`shortllm prune` in prose", "```python", "shortllm = 1", "```", "```bash",
        "shortllm score -c sleb -k 7 --out sleb/ && shortllm prune -k 7 --scores sleb/ --out p/  # both",
        "OMP_NUM_THREADS=1 /usr/bin/time -v shortllm prune --blocks 1 \\", "    --out q/", "pip install -e .",
        "torchrun --nproc_per_node 2 -m shortllm.cli.app retrain ...", "```",
    ])
    assert dx.markdown_commands(text, "x.md") == [
        ("x.md:6", ["score", "-c", "sleb", "-k", "7", "--out", "sleb/"]),
        ("x.md:6", ["prune", "-k", "7", "--scores", "sleb/", "--out", "p/"]),
        ("x.md:7", ["prune", "--blocks", "1", "--out", "q/"]),
    ]
    wrapped = "  Examples:\n\n    shortllm retrain --method kd --max-\n    tokens 5\n\nOptions:\n"
    assert dx.help_commands(wrapped, "h") == (
        [("h (line 3)", ["retrain", "--method", "kd", "--max-"])], ["h: 'tokens 5'"])


def test_shrinking_changes_only_sizes():
    """The override table, applied: sizes replaced or added, everything else as written."""
    assert dx.shrink(("retrain", "-M", "kd", "-m", "pruned/", "--max-tokens", "2000000", "--out", "kd/")) == (
        "retrain", "-M", "kd", "-m", "pruned/", "--max-tokens", "512", "--out", "kd/",
        "--seq-len", "160", "--batch-size", "2", "--max-eval-rows", "2")
    assert dx.shrink(("eval", "-m", "a/", "--ppl", "wikitext2", "--limit", "200", "--seq-len=2048")) == (
        "eval", "-m", "a/", "--ppl", "wikitext2", "--limit", "2", "--seq-len", "32")


def test_parsing_rejects_what_the_command_line_rejects():
    """Parse-only examples are checked for real: unknown options and values that do not convert fail."""
    dx.parse(("prune", "-m", "Qwen/Qwen2.5-0.5B", "-k", "6", "--dtype", "bfloat16"))
    for argv in [("prune", "--ratoi", "0.2"), ("prune", "-k", "six"), ("bench", "--repeats"), ("shrink",)]:
        with pytest.raises(dx.UsageError):
            dx.parse(argv)


PRODUCERS = dx.producers_of(EXAMPLES)


@pytest.mark.parametrize("example", EXAMPLES, ids=_id)
def test_example_runs_or_parses(example: dx.Example, request):
    """Run the example shrunk (exit 0, and its --out folder holds its verb's manifest), or only parse it where it
    needs the hub or a GPU."""
    import torch

    dx.parse(example.argv)  # a usage error fails here, whichever kind of example this is
    if dx.parse_only_reason(example.argv, PRODUCERS, torch.cuda.is_available()) is not None:
        return
    run = request.getfixturevalue("runner").run(example.argv)
    assert run.exit_code == 0, f"example from {', '.join(example.sources)} failed:\n{run.report()}"
    if run.out is not None and "--dry-run" not in example.argv:
        manifest = json.loads(dx.manifest_of(run.cwd, run.out).read_text())
        assert manifest["verb"] == dx.options(example.argv)[0], shlex.join(example.argv)


def test_parse_only_examples_are_few_and_named():
    """Parse-only is the exception, for the reasons of the module docstring only."""
    reasons = {e.text: dx.parse_only_reason(e.argv, PRODUCERS, False) for e in EXAMPLES}
    reasons = {text: why for text, why in reasons.items() if why}
    assert all("hub" in why or "GPU" in why or "parse-only example" in why for why in reasons.values())
    assert 0 < len(reasons) <= len(EXAMPLES) // 4, reasons


def test_data_dir_layout_is_the_documented_one(tmp_path):
    """The tiny data directory has the files of shared/data/README.md's table, under the same names."""
    root = dx.write_offline_data(tmp_path / "data")
    files = sorted(str(p.relative_to(root)) for p in Path(root).rglob("*") if p.is_file())
    assert files == sorted([
        "wikitext-2-raw/wiki.test.raw", "wikitext-2-raw/wiki.valid.raw", "ptb/ptb.train.txt",
        "ptb/ptb.valid.txt", "ptb/ptb.test.txt", "piqa/valid.jsonl", "piqa/valid-labels.lst",
        "hellaswag/hellaswag_val_full.txt", "arc/ARC-Easy-Test.jsonl", "arc/ARC-Challenge-Test.jsonl",
        "winogrande/dev.jsonl", "winogrande/dev-labels.lst", "boolq/dev.jsonl", "openbookqa/test.jsonl",
        "pretrain/c4_en_train_first1000.jsonl", "pretrain/gutenberg_2600_war_and_peace.txt",
        "alpaca/alpaca_data_1k.json",
    ])
