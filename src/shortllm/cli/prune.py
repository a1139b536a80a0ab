"""``shortllm prune``: remove transformer blocks and write a plain Hugging Face checkpoint."""

from __future__ import annotations

import shlex
import sys
from typing import Annotated

import typer

from shortllm.cli.options import (DeviceMapOpt, DeviceOpt, DryRunOpt, DtypeOpt, JsonOpt, ModelOpt, OutOpt,
                                  OverwriteOpt, RevisionOpt, TrustRemoteCodeOpt, load_settings)
from shortllm.cli.output import console, human, print_json, status

BlocksOpt = Annotated[
    str, typer.Option("--blocks", "-b", help="Blocks to remove (original indices), e.g. 20,21 or 10-12.",
                      show_default=False)
]


def prune(
    blocks: BlocksOpt,
    out: OutOpt = None,
    model: ModelOpt = None,
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

    The result is reloaded with plain transformers and its logits checked before success is reported.

    Examples:

      shortllm prune --blocks 20,21 --out pruned/

      shortllm prune -m Qwen/Qwen2.5-0.5B --blocks 14-17 --out qwen-short/ --dtype bfloat16

      shortllm prune --blocks 20,21 --dry-run
    """
    from shortllm.errors import OutputError
    from shortllm.pruning.plan import parse_blocks
    from shortllm.pruning.run import PruneRequest
    from shortllm.pruning.run import prune as run_prune

    if out is None and not dry_run:
        raise OutputError("--out is required", "give an output directory, or use --dry-run to only see the plan")
    request = PruneRequest(
        model=model, blocks=parse_blocks(blocks), out=out,
        settings=load_settings(dtype, device, device_map, trust_remote_code, revision),
        overwrite=overwrite, dry_run=dry_run, command=shlex.join(["shortllm", *sys.argv[1:]]),
    )
    with status("Pruning" if not dry_run else "Planning"):
        result = run_prune(request)
    info = result.as_dict()
    if json_out:
        print_json(info)
        return
    plan = result.plan
    verb = "Would remove" if dry_run else "Removed"
    console.print(
        f"{verb} {len(plan.removed)} of {plan.num_blocks} blocks: {', '.join(map(str, result.removed_original))}\n"
        f"parameters {human(plan.params_before)} -> {human(plan.params_after)} "
        f"({plan.achieved_ratio:.2%} removed); kept blocks {', '.join(map(str, result.kept_original))}"
    )
    if not dry_run:
        console.print(f"Saved to [bold]{result.out}[/] (reload check: max logit diff {result.reload_max_diff:.2g})")
