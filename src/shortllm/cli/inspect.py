"""``shortllm inspect``: what a model is made of, and what each pruning ratio would remove."""

from __future__ import annotations

from shortllm.cli.options import JsonOpt, ModelOpt, RevisionOpt, TrustRemoteCodeOpt, early_checks
from shortllm.cli.output import console, human, print_json, status


def inspect(
    model: ModelOpt = None,
    trust_remote_code: TrustRemoteCodeOpt = False,
    revision: RevisionOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show a model's architecture, blocks, parameters and per-layer types, without loading weights (so it takes
    no --dtype or --device: the dtype shown is the one its config records).

    Examples:

    \b
      shortllm inspect
      shortllm inspect -m Qwen/Qwen2.5-0.5B --json
      shortllm inspect -m ./pruned

    Also lists how many blocks --ratio 0.1 .. 0.8 would remove (never more parameters than asked).
    """
    from shortllm.models.loading import LoadSettings
    from shortllm.models.summary import describe

    settings = LoadSettings(trust_remote_code=trust_remote_code, revision=revision)
    early_checks(settings, models=[model])
    with status("Reading the model config"):
        info = describe(model, settings)
    if json_out:
        print_json(info)
        return
    _render(info)


def _render(info: dict) -> None:
    from rich.table import Table
    from rich.text import Text

    p = info["params"]
    console.print(Text.assemble(
        (str(info["model"]), "bold"),
        f" ({info['architecture']}, type {info['model_type']}, dtype {info['dtype']})\n"
        f"{info['num_blocks']} blocks, hidden {info['hidden_size']}, vocab {info['vocab_size']}, "
        f"tied embeddings: {'yes' if info['tied_embeddings'] else 'no'}\n"
        f"parameters: {human(p['total'])} total = {human(p['blocks'])} in blocks + {human(p['embeddings'])} "
        f"embeddings + {human(p['head'])} head + {human(p['other'])} other\n"
        + "".join(f"{kind}: {path}\n" for kind, path in info["files"].items()).rstrip("\n")
    ), soft_wrap=True)
    blocks = Table(title="Blocks", show_lines=False)
    for col in ("block", "original", "params", "share", "layer type"):
        blocks.add_column(col, justify="right" if col != "layer type" else "left")
    for b in info["blocks"]:
        blocks.add_row(str(b["index"]), str(b["original_index"]), human(b["params"]),
                       f"{b['params'] / p['total']:.2%}", b["layer_type"])
    console.print(blocks)
    ratios = Table(title="--ratio plans")
    for col in ("ratio", "blocks removed", "params after", "achieved"):
        ratios.add_column(col, justify="right")
    for r in info["ratios"]:
        if r["removes_all"]:
            ratios.add_row(f"{r['ratio']:.1f}", f"all {r['num_blocks']}: refused", "-", "-")
        else:
            ratios.add_row(f"{r['ratio']:.1f}", str(r["num_blocks"]), human(r["params_after"]),
                           f"{r['achieved_ratio']:.2%}")
    console.print(ratios)
