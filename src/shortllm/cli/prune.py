"""``shortllm prune``: remove transformer blocks and write a plain Hugging Face checkpoint."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from shortllm.cli.options import (AddBosOpt, BatchSizeOpt, CriterionOpt, DataDirOpt, DataOpt, DeviceMapOpt,
                                  DeviceOpt, DryRunOpt, DtypeOpt, JsonOpt, ModelOpt, NormOpt, OutOpt,
                                  OverwriteOpt, ProtectFirstOpt, ProtectLastOpt, RevisionOpt, SamplesOpt, SeedOpt,
                                  SeqLenOpt, TextFieldOpt, TrustRemoteCodeOpt, load_settings, score_options)
from shortllm.cli.output import activity, console, human, print_json, print_path

BlocksOpt = Annotated[Optional[str], typer.Option(
    "--blocks", "-b", help="Remove exactly these blocks (original indices), e.g. 20,21 or 10-12.",
    show_default=False)]
RatioOpt = Annotated[Optional[float], typer.Option(
    "--ratio", "-r", help="Remove the most blocks whose parameters stay within this fraction of the total.",
    show_default=False)]
NumBlocksOpt = Annotated[Optional[int], typer.Option("--num-blocks", "-k", help="Remove this many blocks.",
                                                     show_default=False)]
ScoresOpt = Annotated[Optional[Path], typer.Option(
    "--scores", help="Reuse a `shortllm score --out` folder instead of scoring now.", show_default=False)]


def prune(
    out: OutOpt = None,
    ratio: RatioOpt = None,
    num_blocks: NumBlocksOpt = None,
    blocks: BlocksOpt = None,
    criterion: CriterionOpt = "ppl",
    scores: ScoresOpt = None,
    model: ModelOpt = None,
    protect_first: ProtectFirstOpt = None,
    protect_last: ProtectLastOpt = None,
    norm: NormOpt = 1,
    data: DataOpt = "pydoc",
    data_dir: DataDirOpt = None,
    text_field: TextFieldOpt = "text",
    samples: SamplesOpt = 10,
    seq_len: SeqLenOpt = 128,
    seed: SeedOpt = 1234,
    add_bos: AddBosOpt = False,
    batch_size: BatchSizeOpt = None,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    device_map: DeviceMapOpt = None,
    trust_remote_code: TrustRemoteCodeOpt = False,
    revision: RevisionOpt = None,
    overwrite: OverwriteOpt = False,
    dry_run: DryRunOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Remove transformer blocks and save the shorter model (safetensors, tokenizer, manifest, card).

    With --ratio or --num-blocks the blocks are ranked by --criterion (scored now on calibration text) or
    taken from a saved --scores folder; --blocks names them directly. The result is reloaded with plain
    transformers and its logits checked before success is reported.

    Examples:

    \b
      shortllm prune --ratio 0.2 --out pruned/
      shortllm prune -m Qwen/Qwen2.5-0.5B -k 6 -c taylor+ --out qwen-short/ --dtype bfloat16
      shortllm prune --blocks 20,21 --dry-run
    """
    from shortllm.pruning.plan import parse_blocks
    from shortllm.pruning.run import PruneRequest
    from shortllm.pruning.run import prune as run_prune

    request = PruneRequest(
        model=model, out=out, blocks=parse_blocks(blocks) if blocks is not None else None, ratio=ratio,
        num_blocks=num_blocks, scores_dir=scores,
        scoring=score_options(criterion, protect_first, protect_last, norm, batch_size, data, data_dir,
                              text_field, samples, seq_len, seed, add_bos),
        settings=load_settings(dtype, device, device_map, trust_remote_code, revision),
        overwrite=overwrite, dry_run=dry_run, command=shlex.join(["shortllm", *sys.argv[1:]]),
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
        print_path("Saved to ", result.out, f" (reload check: max logit diff {result.reload_max_diff:.2g})")
