"""Options shared by every verb, defined once so they are spelled and documented the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

MODEL_HELP = ("Hub id, local HF directory, .gguf file, or alias 'smollm2-135m' "
              "(the default: the embedded SmolLM2-135M-Instruct).")
ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help=MODEL_HELP, show_default=False, rich_help_panel='Model and loading')]
# The side-by-side verbs (eval, bench) take -m several times.
ModelsOpt = Annotated[
    Optional[list[str]],
    typer.Option("--model", "-m", help=MODEL_HELP + " Repeat to compare models side by side; deltas and "
                 "speedups are against the first.", show_default=False, rich_help_panel='Model and loading'),
]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="auto (the checkpoint's own) | float32 | bfloat16 | float16.", rich_help_panel='Model and loading')]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto | cpu | cuda | mps (auto: cuda, else mps, else cpu).", rich_help_panel='Model and loading')]
DeviceMapOpt = Annotated[
    Optional[str],
    typer.Option("--device-map", help="Passed to from_pretrained, e.g. 'auto' to spread a large model over GPUs.",
                 show_default=False, rich_help_panel='Model and loading'),
]
TrustRemoteCodeOpt = Annotated[
    bool, typer.Option("--trust-remote-code", help="Allow the model repository's own Python code to run.", rich_help_panel='Model and loading')
]
KernelsOpt = Annotated[bool, typer.Option(
    "--kernels/--no-kernels",
    help="Let transformers swap layers (RMSNorm, MLP, attention) for Hub kernels from the 'kernels' package: "
    "faster on GPUs, fetched from the Hub on first use, results may differ in the last bits. Off by default, "
    "whatever the installed transformers would do, so logits are exact and runs work offline.", rich_help_panel='Model and loading')]
RevisionOpt = Annotated[
    Optional[str], typer.Option("--revision", help="Hub branch, tag or commit.", show_default=False, rich_help_panel='Model and loading')
]
def _out_path(value: str) -> Path:
    """``--out``'s parser: an empty value is refused as what it is (``Path("")`` would be the current folder)."""
    if not value.strip():
        raise typer.BadParameter("--out is empty: give the folder to write")
    return Path(value)


OutOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="Output directory (written atomically).",
                                                show_default=False, parser=_out_path, metavar="<path>", rich_help_panel='Output')]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty --out directory.", rich_help_panel='Output')]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of tables.", rich_help_panel='Output')]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Show the plan; load no weights, write nothing.", rich_help_panel='Output')]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed.", rich_help_panel='Calibration')]


def load_settings(dtype: str, device: str, device_map: str | None, trust_remote_code: bool, revision: str | None,
                  kernels: bool = False):
    """Bundle the loading options into the core's LoadSettings (imported lazily to keep --help instant)."""
    from shortllm.models.loading import LoadSettings

    return LoadSettings(dtype=dtype, device=device, device_map=device_map,
                        trust_remote_code=trust_remote_code, revision=revision, kernels=kernels)


# Criterion names for help text; the registry (shortllm.scoring) is the authority at run time.
CRITERIA_HELP = ("ppl | taylor | taylor+ | magnitude | bi | angular | sleb | chop | auto (every cheap "
                 "criterion's cut and every contiguous run, measured on held-out text; the best wins)")

CriterionOpt = Annotated[str, typer.Option("--criterion", "-c", help=f"Block-importance criterion: {CRITERIA_HELP}.", rich_help_panel='Criterion')]
ProtectFirstOpt = Annotated[Optional[int], typer.Option(
    "--protect-first", help="Never remove the first N blocks (default: the criterion's own; taylor+ and --plus = "
    "4, sleb = 1).",
    show_default=False, rich_help_panel='Criterion')]
ProtectLastOpt = Annotated[Optional[int], typer.Option(
    "--protect-last", help="Never remove the last N blocks (default: the criterion's own; taylor+ and --plus = "
    "2, sleb = 1).",
    show_default=False, rich_help_panel='Criterion')]
NormOpt = Annotated[int, typer.Option("--norm", help="p of magnitude/taylor: 1 (abs) or 2 (squares).", rich_help_panel='Criterion')]
BatchSizeOpt = Annotated[Optional[int], typer.Option(
    "--batch-size", help="Calibration rows per forward pass (default: all at once).", show_default=False, rich_help_panel='Calibration')]
DataOpt = Annotated[str, typer.Option(
    "--data", "-d", help="Calibration text: pydoc (built in), wikitext2, ptb, c4, bookcorpus, slimpajama "
    "(name[:split]), hf:OWNER/NAME[/CONFIG][:SPLIT], or a .txt/.jsonl/.json/.parquet file or folder.", rich_help_panel='Calibration')]
DataDirOpt = Annotated[Optional[str], typer.Option(
    "--data-dir", help="Local copies of named datasets (default: $SHORTLLM_DATA_DIR); see docs/data.md.",
    show_default=False, rich_help_panel='Calibration')]
TextFieldOpt = Annotated[str, typer.Option(
    "--text-field", help="Field holding the text in .jsonl/.json/.parquet files and hf: datasets.", rich_help_panel='Calibration')]
SamplesOpt = Annotated[int, typer.Option("--samples", help="Number of calibration windows.", rich_help_panel='Calibration')]
SeqLenOpt = Annotated[int, typer.Option("--seq-len", help="Tokens per calibration window.", rich_help_panel='Calibration')]
AddBosOpt = Annotated[Optional[bool], typer.Option(
    "--add-bos/--no-add-bos", help="Start every calibration window with the BOS token. [default: on for the Gemma "
    "family, which needs it; off otherwise]", show_default=False, rich_help_panel='Calibration')]
PlusOpt = Annotated[bool, typer.Option(
    "--plus", help="Shortened LLaMA's \"+\" heuristic for any criterion: never remove the first 4 and last 2 blocks "
    "(taylor+ = taylor --plus). --protect-first/--protect-last still override.", rich_help_panel='Criterion')]
SlebBarriersOpt = Annotated[bool, typer.Option(
    "--sleb-barriers/--no-sleb-barriers", help="sleb: never remove the first and last block, as SLEB's reference "
    "code (its early/latter barriers).", rich_help_panel='Criterion')]
SearchTokensOpt = Annotated[int, typer.Option(
    "--search-tokens", help="--criterion auto: held-out calibration tokens each candidate cut is measured on "
    "(windows from documents the scoring windows did not use).", rich_help_panel='--criterion auto')]
RefineOpt = Annotated[int, typer.Option(
    "--refine", help="--criterion auto: rounds of local search after the pick (swap one removed block for the "
    "nearest kept one while held-out perplexity improves); 0 = none.", rich_help_panel='--criterion auto')]
SearchSlebOpt = Annotated[bool, typer.Option(
    "--search-sleb", help="--criterion auto: also try sleb's cut (slow: k rounds of the ppl pass).", rich_help_panel='--criterion auto')]
OffloadOpt = Annotated[Optional[bool], typer.Option(
    "--offload/--no-offload", help="Score layer by layer: one block in memory at a time, read from the "
    "safetensors files (default: when the model would not fit in memory). See docs/big-models.md.",
    show_default=False, rich_help_panel='Criterion')]


def early_checks(settings=None, *, models: list | None = None, ratio: float | None = None,
                 num_blocks: int | None = None, scoring=None,
                 replace: str | None = None, replace_options=None, max_shard_size: str | None = None,
                 output: tuple | None = None, texts: list[tuple] = ()) -> None:
    """The core's checks of option values that need no model, run before torch or a config is loaded (imports and
    the config take 2-60 s): a bad value, or data that names nothing, is answered at once. Each check is the core's own function, which the
    core runs again on its path (the Python API gets the same answers)."""
    from shortllm.pruning.plan import check_size

    check_size(ratio, num_blocks)
    if settings is not None:
        from shortllm.models.loading import check_names, check_revision

        check_names(settings)
        if models is not None:  # the models of the run, when all are known before loading
            check_revision(models, settings.revision)
    if scoring is not None:
        from shortllm.data.sampling import check_calibration_sizes
        from shortllm.scoring.options import check_options

        check_options(scoring)
        check_calibration_sizes(scoring.calibration.samples, scoring.calibration.seq_len)
    if replace is not None:
        from shortllm.pruning.replace import check_options as check_replace
        from shortllm.pruning.replacements import get_replacement

        get_replacement(replace)
        check_replace(replace_options)
    if max_shard_size is not None:
        from shortllm.models.checkpoint import parse_size

        parse_size(max_shard_size)
    if output is not None:  # (--out, --format) of a prune
        from shortllm.formats import writes_gguf

        writes_gguf(*output)
    for spec, split, data_dir, text_field in texts:  # the data the run reads: (spec, split, --data-dir, field)
        from shortllm.data.corpora import check_data

        check_data(spec, split, data_dir, text_field)


def calibration_text(options) -> tuple:
    """(spec, split, --data-dir, --text-field) of a ScoreOptions' calibration, for :func:`early_checks`."""
    cal = options.calibration
    return cal.data, cal.split, cal.data_dir, cal.text_field


def score_options(criterion: str, protect_first, protect_last, norm: int, batch_size, data: str, data_dir,
                  text_field: str, samples: int, seq_len: int, seed: int, add_bos: bool,
                  offload: bool | None = None, search_tokens: int = 4096, refine: int = 0,
                  search_sleb: bool = False, plus: bool = False, sleb_barriers: bool = True):
    """Bundle the scoring/calibration options into the core's ScoreOptions (lazy import)."""
    from shortllm.scoring.options import Calibration, ScoreOptions, SearchOptions

    return ScoreOptions(
        criterion=criterion, protect_first=protect_first, protect_last=protect_last, norm=norm,
        plus=plus, sleb_barriers=sleb_barriers, batch_size=batch_size, offload=offload,
        search=SearchOptions(tokens=search_tokens, refine=refine, sleb=search_sleb),
        calibration=Calibration(data=data, split="train", data_dir=data_dir, text_field=text_field,
                                samples=samples, seq_len=seq_len, seed=seed, add_bos=add_bos),
    )
