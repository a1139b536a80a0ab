"""``shortllm prune``: remove transformer blocks and write a plain Hugging Face checkpoint."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from shortllm.cli import applies
from shortllm.cli.options import PlusOpt, SlebBarriersOpt
from shortllm.cli.options import (AddBosOpt, BatchSizeOpt, CriterionOpt, DataDirOpt, DataOpt, DeviceMapOpt,
                                  DeviceOpt, DryRunOpt, DtypeOpt, JsonOpt, ModelOpt, NormOpt, OutOpt,
                                  OverwriteOpt, ProtectFirstOpt, ProtectLastOpt, RevisionOpt, SamplesOpt, SeedOpt,
                                  SeqLenOpt, OffloadOpt, RefineOpt, SearchSlebOpt, SearchTokensOpt, TextFieldOpt,
                                  KernelsOpt, TrustRemoteCodeOpt, calibration_text, early_checks, load_settings,
                                  score_options)
from shortllm.cli.output import activity, console, human, print_json, print_path
from shortllm.models.checkpoint import DEFAULT_MAX_SHARD_SIZE  # no torch: keeps --help instant

BlocksOpt = Annotated[Optional[str], typer.Option(
    "--blocks", "-b", help="Remove exactly these blocks, e.g. 20,21 or 10-12: indices of the model given to -m (0-based; for an already-pruned model its current blocks, not the original's).",
    show_default=False, rich_help_panel='What to remove')]
RatioOpt = Annotated[Optional[float], typer.Option(
    "--ratio", "-r", help="Remove the most blocks whose parameters stay within this fraction of the total.",
    show_default=False, rich_help_panel='What to remove')]
NumBlocksOpt = Annotated[Optional[int], typer.Option("--num-blocks", "-k", help="Remove this many blocks.",
                                                     show_default=False, rich_help_panel='What to remove')]
ScoresOpt = Annotated[Optional[Path], typer.Option(
    "--scores", help="Reuse a `shortllm score --out` folder instead of scoring now.", show_default=False, rich_help_panel='What to remove')]
FormatOpt = Annotated[Optional[str], typer.Option(
    "--format", help="Output format: hf (a Hugging Face folder) or gguf (quantized bytes copied from a .gguf "
    "model; see docs/gguf.md). Default: gguf when --out ends in .gguf, else hf.", show_default=False, rich_help_panel='Output')]
KeepPatternOpt = Annotated[bool, typer.Option(
    "--keep-attention-pattern", help="Choose only removals that keep every kept block's attention role as "
    "llama.cpp derives it from block indices (Gemma 2/3, Cohere 2, ...), e.g. whole pattern periods.", rich_help_panel='What to remove')]
ReplaceOpt = Annotated[Optional[str], typer.Option(
    "--replace", help="Stand in for each removed run: linear (ReplaceMe, training-free: a least-squares map "
    "folded into the MLP output of the block before the run; the model keeps its architecture) | block "
    "(LLM-Streamline: the run's last block stays, trained to map the run's input to its output hidden states; "
    "--ratio counts it, so one more block is cut).",
    show_default=False, rich_help_panel='Replacement (--replace)')]
ReplaceSamplesOpt = Annotated[Optional[int], typer.Option(
    "--replace-samples", help="--replace: calibration windows (of --seq-len tokens, from --data) to fit on "
    "[default: linear 64, block 256].", show_default=False, rich_help_panel='Replacement (--replace)')]
ReplaceRidgeOpt = Annotated[float, typer.Option(
    "--replace-ridge", help="--replace linear: ridge term, relative to the mean diagonal of the Gram matrix.", rich_help_panel='Replacement (--replace)')]
ReplaceObjectiveOpt = Annotated[str, typer.Option(
    "--replace-objective", help="--replace: token (each token's squared error relative to its own squared "
    "norm, averaged) | mse (the papers' plain squared error, which the first token's massive activations "
    "dominate).", rich_help_panel='Replacement (--replace)')]
ReplaceEpochsOpt = Annotated[int, typer.Option("--replace-epochs", help="--replace block: passes over the windows.", rich_help_panel='Replacement (--replace)')]
ReplaceLrOpt = Annotated[float, typer.Option("--replace-lr", help="--replace block: AdamW learning rate.", rich_help_panel='Replacement (--replace)')]
ReplaceInitOpt = Annotated[str, typer.Option(
    "--replace-init", help="--replace block: the trained block starts from the run's last | first block, or "
    "previous (the kept block before the run).", rich_help_panel='Replacement (--replace)')]


def _replace_options(**given):
    """The core's ReplaceOptions (lazy import keeps --help instant)."""
    from shortllm.pruning.replace import ReplaceOptions

    return ReplaceOptions(**given)


MaxShardSizeOpt = Annotated[str, typer.Option(
    "--max-shard-size", help="Largest safetensors file of the output, e.g. 5GB or 500MB (as save_pretrained).", rich_help_panel='Output')]


def prune(
    ctx: typer.Context,
    out: OutOpt = None,
    ratio: RatioOpt = None,
    num_blocks: NumBlocksOpt = None,
    blocks: BlocksOpt = None,
    criterion: CriterionOpt = "ppl",
    scores: ScoresOpt = None,
    model: ModelOpt = None,
    protect_first: ProtectFirstOpt = None,
    protect_last: ProtectLastOpt = None,
    plus: PlusOpt = False,
    sleb_barriers: SlebBarriersOpt = True,
    norm: NormOpt = 1,
    data: DataOpt = "pydoc",
    data_dir: DataDirOpt = None,
    text_field: TextFieldOpt = "text",
    samples: SamplesOpt = 10,
    seq_len: SeqLenOpt = 128,
    seed: SeedOpt = 1234,
    add_bos: AddBosOpt = None,
    batch_size: BatchSizeOpt = None,
    offload: OffloadOpt = None,
    search_tokens: SearchTokensOpt = 4096,
    refine: RefineOpt = 0,
    search_sleb: SearchSlebOpt = False,
    replace: ReplaceOpt = None,
    replace_samples: ReplaceSamplesOpt = None,
    replace_ridge: ReplaceRidgeOpt = 1e-4,
    replace_objective: ReplaceObjectiveOpt = "token",
    replace_epochs: ReplaceEpochsOpt = 4,
    replace_lr: ReplaceLrOpt = 5e-3,
    replace_init: ReplaceInitOpt = "last",
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    device_map: DeviceMapOpt = None,
    trust_remote_code: TrustRemoteCodeOpt = False,
    kernels: KernelsOpt = False,
    revision: RevisionOpt = None,
    overwrite: OverwriteOpt = False,
    dry_run: DryRunOpt = False,
    max_shard_size: MaxShardSizeOpt = DEFAULT_MAX_SHARD_SIZE,
    out_format: FormatOpt = None,
    keep_attention_pattern: KeepPatternOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Remove transformer blocks and save the shorter model (safetensors, tokenizer, manifest, card).

    Examples:

    \b
      shortllm prune --ratio 0.2 --out pruned/
      shortllm prune -m Qwen/Qwen2.5-0.5B -k 6 -c taylor+ --out qwen-short/ --dtype bfloat16
      shortllm prune --blocks 20,21 --dry-run
      shortllm prune -m model.gguf --blocks 20,21 --out short.gguf

    With --ratio or --num-blocks the blocks are ranked by --criterion (scored now on calibration text) or
    taken from a saved --scores folder; --blocks names them directly. The result is reloaded with plain
    transformers and its logits checked before success is reported.

    When the blocks are known before loading (--blocks, --scores) the safetensors files are rewritten tensor
    by tensor without loading the model (out-of-core: memory of one tensor, time of a disk copy; models over
    1 GB are checked by tensor names, dtypes and shapes instead of logits). See docs/big-models.md.

    From a .gguf model, an --out ending in .gguf (or --format gguf) writes a GGUF whose kept tensors are the
    source's quantized bytes, unchanged (see docs/gguf.md).
    """
    applies.check_given(ctx, applies.PRUNE)
    scoring = score_options(criterion, protect_first, protect_last, norm, batch_size, data, data_dir, text_field,
                            samples, seq_len, seed, add_bos, offload, search_tokens, refine, search_sleb, plus=plus,
                            sleb_barriers=sleb_barriers)
    settings = load_settings(dtype, device, device_map, trust_remote_code, revision, kernels)
    replace_options = _replace_options(samples=replace_samples, ridge=replace_ridge, objective=replace_objective,
                                       epochs=replace_epochs, lr=replace_lr, init=replace_init)
    scoring_now = blocks is None and scores is None
    early_checks(settings, models=[model], ratio=ratio, num_blocks=num_blocks, scoring=scoring if scoring_now else None,
                 replace=replace, replace_options=replace_options, max_shard_size=max_shard_size,
                 output=(out, out_format), texts=[calibration_text(scoring)] if (
                     scoring_now and applies.reads_text(criterion)) or (replace and not dry_run) else [])
    from shortllm.pruning.plan import parse_blocks

    removed = parse_blocks(blocks) if blocks is not None else None
    from shortllm.pruning.run import PruneRequest
    from shortllm.pruning.run import prune as run_prune

    request = PruneRequest(
        model=model, out=out, blocks=removed, ratio=ratio,
        num_blocks=num_blocks, scores_dir=scores, scoring=scoring, settings=settings,
        overwrite=overwrite, dry_run=dry_run, command=shlex.join(["shortllm", *sys.argv[1:]]),
        max_shard_size=max_shard_size, out_format=out_format, keep_attention_pattern=keep_attention_pattern,
        replace=replace, replace_options=replace_options,
    )
    with activity("Starting shortllm prune") as act:  # the core names the next phases: loading, scoring, saving...
        result = run_prune(request, progress=act.counter(f"Scoring blocks ({criterion})"))
    if json_out:
        print_json(result.as_dict())
        return
    plan = result.plan
    verb = "Would remove" if dry_run else "Removed"
    ratio_note = f" (asked for at most {result.requested_ratio:.0%})" if result.requested_ratio else ""
    console.print(
        f"{verb} {len(plan.removed)} of {plan.num_blocks} blocks: {', '.join(map(str, result.removed_original))}"
        f" — {result.how}\n"
        f"parameters {human(plan.params_before)} -> {human(plan.params_after)}: "
        f"{plan.achieved_ratio:.2%} removed{ratio_note}; kept blocks {', '.join(map(str, result.kept_original))}",
        soft_wrap=True,  # `how` can name a --scores path: never fold it
    )
    if not dry_run:
        check = ("reload check: max logit diff " + format(result.reload_max_diff, ".2g")
                 if result.reload_max_diff is not None else "checked tensor names, dtypes and shapes")
        if result.out_format == "gguf":
            check = f"{result.written['byte_identical_tensors']} tensors byte-identical to the source"
        print_path("Saved to ", result.out, f" ({result.surgery} surgery; {check})")
