"""``shortllm score``: rank blocks by importance -> scores.json, block_order.csv, scores.png."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from shortllm.cli import applies
from shortllm.cli.options import PlusOpt, SlebBarriersOpt
from shortllm.cli.options import (AddBosOpt, BatchSizeOpt, CriterionOpt, DataDirOpt, DataOpt, DeviceMapOpt,
                                  DeviceOpt, DtypeOpt, JsonOpt, ModelOpt, NormOpt, OutOpt, OverwriteOpt,
                                  ProtectFirstOpt, ProtectLastOpt, RevisionOpt, SamplesOpt, SeedOpt, SeqLenOpt,
                                  OffloadOpt, RefineOpt, SearchSlebOpt, SearchTokensOpt, TextFieldOpt,
                                  KernelsOpt, TrustRemoteCodeOpt, calibration_text, early_checks, load_settings,
                                  score_options)
from shortllm.cli.output import activity, console, print_json, print_path

NumBlocksOpt = Annotated[Optional[int], typer.Option(
    "--num-blocks", "-k", help="Blocks the plan removes: highlighted in the plot; sleb and angular need it "
    "(default: what --ratio 0.2 removes).", show_default=False, rich_help_panel='Plan')]
RatioOpt = Annotated[Optional[float], typer.Option(
    "--ratio", help="Or give the plan as a parameter ratio (default 0.2).", show_default=False, rich_help_panel='Plan')]


def score(
    ctx: typer.Context,
    criterion: CriterionOpt = "ppl",
    out: OutOpt = None,
    model: ModelOpt = None,
    num_blocks: NumBlocksOpt = None,
    ratio: RatioOpt = None,
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
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    device_map: DeviceMapOpt = None,
    trust_remote_code: TrustRemoteCodeOpt = False,
    kernels: KernelsOpt = False,
    revision: RevisionOpt = None,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Rank the model's blocks by importance (least important first) with one criterion.

    Examples:

    \b
      shortllm score --criterion ppl --out scores/
      shortllm score -c taylor+ --data c4 --data-dir ../shared/data --out taylor/ --json
      shortllm score -c angular -k 6 -m Qwen/Qwen2.5-0.5B --out angular/

    Writes scores.json (inside the shortllm.json manifest too), block_order.csv and scores.png to --out.
    Calibration follows Shortened LLaMA: 10 random windows of 128 tokens, seed 1234.
    """
    applies.check_given(ctx, applies.SCORE)
    options = score_options(criterion, protect_first, protect_last, norm, batch_size, data, data_dir, text_field,
                            samples, seq_len, seed, add_bos, offload, search_tokens, refine, search_sleb, plus=plus,
                            sleb_barriers=sleb_barriers)
    settings = load_settings(dtype, device, device_map, trust_remote_code, revision, kernels)
    early_checks(settings, models=[model], ratio=ratio, num_blocks=num_blocks, scoring=options,
                 texts=[calibration_text(options)] if applies.reads_text(criterion) else [])
    from shortllm.scoring.run import ScoreRequest, run_score

    request = ScoreRequest(model=model, out=out, num_blocks=num_blocks, ratio=ratio, overwrite=overwrite,
                           options=options, settings=settings)
    with activity("Starting shortllm score") as act:  # the core names the next phases: loading, scoring, saving
        report = run_score(request, progress=act.counter(f"Scoring blocks ({criterion})"))
    if json_out:
        print_json(report)
        return
    _render(report)


def _render(report: dict) -> None:
    from rich.table import Table
    from rich.text import Text

    from shortllm.scoring.plot import describe_bars
    from shortllm.wording import plural

    rank = {b: r for r, b in enumerate(report["order"])}
    table = Table(title=f"{report['criterion']} scores of {report['model']}",
                  caption=f"score = {describe_bars(report)}")
    for col in ("block", "score", "rank", ""):
        table.add_column(col, justify="right" if col != "" else "left")
    removal, protected = set(report["removal"]), set(report["protected"])
    run = report["extras"].get("run_length") if report["criterion"] == "angular" else None
    for i, s in enumerate(report["scores"]):
        mark = (Text("would be removed", "red") if i in removal else Text("protected", "dim") if i in protected
                else Text(f"no run of {run} fits", "dim") if run and s is None else "")
        table.add_row(str(i), "-" if s is None else f"{s:.6g}", str(rank.get(i, "-")), mark)
    console.print(table)
    base = report["extras"].get("baseline_ppl")
    console.print(
        f"Order (least important first): {','.join(map(str, report['order']))}\n"
        f"A prune with this plan would remove {plural(len(removal), 'block')}: "
        f"{', '.join(map(str, report['removal']))}"
        + (f"; calibration perplexity of the full model {base:.3f}" if base else "")
    )
    if "candidates" in report["extras"]:  # --criterion auto: every candidate cut and why the winner won
        _render_candidates(report)
    if report.get("out"):
        print_path("Saved to ", report["out"])


def _render_candidates(report: dict) -> None:
    from rich.table import Table

    extras = report["extras"]
    winner = extras["winner"]
    table = Table(title="auto: candidate cuts, by held-out perplexity",
                  caption=f"full model: {extras['baseline_heldout_ppl']:.4g}")
    for col in ("removed blocks", "proposed by", "held-out ppl"):
        table.add_column(col, justify="right" if col == "held-out ppl" else "left")
    for c in extras["candidates"]:
        table.add_row(",".join(map(str, c["removed"])), ", ".join(c["sources"]), f"{c['heldout_ppl']:.4g}")
    for k, step in enumerate(extras.get("refine_steps") or [], 1):
        table.add_row(",".join(map(str, step["removed"])), f"refinement step {k}", f"{step['heldout_ppl']:.4g}")
    console.print(table)
    console.print(f"Chosen: {','.join(map(str, winner['removed']))} ({winner['source']}): {winner['why']}",
                  soft_wrap=True)
