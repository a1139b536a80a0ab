"""``shortllm eval``: perplexity and lm-eval zero-shot accuracy, several models side by side -> eval.json."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from shortllm.cli import applies
from shortllm.cli.options import (
    DataDirOpt,
    DeviceMapOpt,
    DeviceOpt,
    DtypeOpt,
    JsonOpt,
    ModelsOpt,
    OutOpt,
    OverwriteOpt,
    RevisionOpt,
    SeedOpt,
    TextFieldOpt,
    KernelsOpt, TrustRemoteCodeOpt,
    early_checks,
    load_settings,
)
from shortllm.cli.help import in_group
from shortllm.cli.output import activity, console, print_json, print_path, progress_bar

PplOpt = Annotated[Optional[str], typer.Option(
    "--ppl", help="Perplexity datasets, comma-separated: wikitext2 (test), ptb (validation, as the reference "
    "code; ptb:test for test), c4, pydoc, name:split, or a local file; c4-gptq measures C4 as GPTQ/SparseGPT/SLEB "
    "do (first 1100 validation documents, 256 windows of 2048 tokens); 'none' to skip. [default: wikitext2,ptb]",
    show_default=False, rich_help_panel='Perplexity')]
TasksOpt = Annotated[Optional[str], typer.Option(
    "--tasks", "-t", help="lm-eval tasks, comma-separated; 'none' to skip. [default: the paper's seven: boolq, "
    "piqa, hellaswag, winogrande, arc_easy, arc_challenge, openbookqa]", show_default=False, rich_help_panel='Tasks (lm-eval)')]
ProtocolOpt = Annotated[str, typer.Option(
    "--ppl-protocol", help="paper: non-overlapping windows, BOS only at the start; sliding: strided windows.", rich_help_panel='Perplexity')]
EvalSeqLenOpt = Annotated[Optional[int], typer.Option(
    "--seq-len", help="Perplexity window in tokens. [default: 128 paper, 2048 sliding]", show_default=False, rich_help_panel='Perplexity')]
StrideOpt = Annotated[int, typer.Option("--stride", help="Step between sliding windows (sliding only).", rich_help_panel='Perplexity')]
BosEveryOpt = Annotated[Optional[bool], typer.Option(
    "--bos-every/--no-bos-every", help="Put BOS before every perplexity window of --seq-len text tokens (paper "
    "protocol; the reference repo's ppl_bos variant). [default: on for the Gemma family, which needs BOS]",
    show_default=False, rich_help_panel='Perplexity')]
PplBosOpt = Annotated[str, typer.Option(
    "--ppl-bos", help="BOS at the start of the perplexity text: tokenizer (its own special tokens), always (the "
    "BOS id first whatever the tokenizer does: the Shortened LLaMA release), never.", rich_help_panel='Perplexity')]
LmEvalBosOpt = Annotated[Optional[bool], typer.Option(
    "--add-bos/--no-add-bos", help="Start lm-eval task inputs with BOS (lm-eval's add_bos_token). The Shortened "
    "LLaMA numbers were produced without it. [default: the tokenizer's own behaviour, as lm-eval 0.4; Gemma: on]",
    show_default=False, rich_help_panel='Tasks (lm-eval)')]
LimitOpt = Annotated[Optional[int], typer.Option(
    "--limit", help="Quick runs: the first N perplexity windows and the first N examples of each task.",
    show_default=False, rich_help_panel='Data and sizes')]
EvalBatchOpt = Annotated[Optional[int], typer.Option(
    "--batch-size", help="Rows per forward pass. [default: 8 for tasks; perplexity: 2048 tokens' worth]",
    show_default=False, rich_help_panel='Data and sizes')]
FewshotOpt = Annotated[int, typer.Option("--num-fewshot", help="Examples in each task prompt (0 = zero-shot).", rich_help_panel='Tasks (lm-eval)')]
IncludeOpt = Annotated[Optional[list[Path]], typer.Option(
    "--include-path", help="A folder of your own lm-eval task YAML files (repeatable).", show_default=False, rich_help_panel='Tasks (lm-eval)')]
GenerateOpt = Annotated[Optional[str], typer.Option(
    "--generate", help="Add each model's greedy continuation of this prompt to the report.", show_default=False, rich_help_panel='Generation')]
MaxNewOpt = Annotated[int, typer.Option("--max-new-tokens", help="Tokens generated for --generate.", rich_help_panel='Generation')]


def eval(
    ctx: typer.Context,
    model: ModelsOpt = None,
    ppl: PplOpt = None,
    tasks: TasksOpt = None,
    ppl_protocol: ProtocolOpt = "paper",
    seq_len: EvalSeqLenOpt = None,
    stride: StrideOpt = 512,
    bos_every: BosEveryOpt = None,
    ppl_bos: PplBosOpt = "tokenizer",
    add_bos: LmEvalBosOpt = None,
    limit: LimitOpt = None,
    batch_size: EvalBatchOpt = None,
    num_fewshot: FewshotOpt = 0,
    data_dir: in_group(DataDirOpt, "Data and sizes") = None,
    text_field: in_group(TextFieldOpt, "Perplexity") = "text",
    include_path: IncludeOpt = None,
    generate: GenerateOpt = None,
    max_new_tokens: MaxNewOpt = 32,
    out: OutOpt = None,
    seed: in_group(SeedOpt, "Data and sizes") = 1234,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    device_map: DeviceMapOpt = None,
    trust_remote_code: TrustRemoteCodeOpt = False,
    kernels: KernelsOpt = False,
    revision: RevisionOpt = None,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Measure perplexity and zero-shot accuracy of one or more models, side by side.

    Examples:

    \b
      shortllm eval -m smollm2-135m -m pruned/ --ppl wikitext2,ptb --tasks piqa,arc_easy --limit 200 \\
          --data-dir ../shared/data
      shortllm eval -m pruned/ --tasks none --ppl wikitext2 --ppl-protocol sliding --seq-len 2048 \\
          --stride 512 --data-dir ../shared/data
      shortllm eval -m healed/ --data-dir ../shared/data --out eval-healed/ --json

    Perplexity follows Shortened LLaMA (--ppl-protocol paper, 128-token windows) or the strided recipe
    (--ppl-protocol sliding). Tasks run through lm-eval on the model already in memory; with --data-dir (or
    $SHORTLLM_DATA_DIR) the paper's seven tasks read local files instead of downloading (docs/eval.md).

    With --out: eval.json and shortllm.json.
    """
    applies.check_given(ctx, applies.EVAL)
    settings = load_settings(dtype, device, device_map, trust_remote_code, revision, kernels)
    early_checks(settings, models=list(model or [None]))
    from shortllm.evaluation.lmeval import parse_tasks
    from shortllm.evaluation.run import EvalRequest, parse_ppl, run_eval

    request = EvalRequest(
        models=list(model) if model else [None], ppl=parse_ppl(ppl), tasks=parse_tasks(tasks),
        protocol=ppl_protocol, seq_len=seq_len, stride=stride, bos_every=bos_every, ppl_bos=ppl_bos,
        add_bos=add_bos, limit=limit,
        batch_size=batch_size, num_fewshot=num_fewshot, seed=seed, data_dir=data_dir, text_field=text_field,
        include_paths=list(include_path or []), generate=generate, max_new_tokens=max_new_tokens,
        settings=settings, out=out, overwrite=overwrite, command=shlex.join(["shortllm", *sys.argv[1:]]),
    )
    with activity("Evaluating"):  # loading each model, each perplexity and lm-eval run: a phase of it
        report = run_eval(request, phase=progress_bar)
    if json_out:
        print_json(report)
        return
    _render(report)


def _fmt(value, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _render(report: dict) -> None:
    from rich.table import Table
    from rich.text import Text

    from shortllm.evaluation.report import comparison_rows

    models = report["models"]
    settings = report["settings"]
    limit = f", first {settings['limit']}" if settings.get("limit") else ""
    own = {name: d["seq_len"] for name, d in (models[0].get("ppl_details") or {}).items() if d.get("recipe")}
    recipes = "".join(f"; {name}: {n}-token windows" for name, n in own.items())  # c4-gptq sets its own
    table = Table(title=f"shortllm eval ({settings['protocol']} perplexity, {settings['seq_len']}-token windows"
                  f"{recipes}{limit}; deltas vs the first model)")
    table.add_column("metric")
    for m in models:
        table.add_column(m["label"], justify="right")
    for row in comparison_rows(models):
        is_ppl = row.name.startswith("ppl ")
        digits = 2 if is_ppl else 4
        cells = []
        for i, (value, stderr, delta) in enumerate(zip(row.values, row.stderrs, row.deltas)):
            text = Text(_fmt(value, digits) + (f" ± {stderr:.3f}" if stderr is not None else ""))
            if i > 0 and delta is not None:
                better = (delta > 0) == row.higher_is_better
                colour = "green" if better and delta != 0 else "red" if delta != 0 else "dim"
                text.append(f" ({delta:+.{digits}f})", colour)
            cells.append(text)
        table.add_row(row.name, *cells)
    console.print(table)
    for m in models:
        if m.get("generation"):
            console.print(Text.assemble((f"{m['label']}: ", "bold"), m["generation"]["prompt"],
                                        (m["generation"]["text"], "cyan")))
    if report.get("out"):
        print_path("Saved to ", report["out"])
