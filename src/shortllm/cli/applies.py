"""When each verb reads its options: an option given for a run that would not read it is refused, never ignored.

Many options matter only to some inputs: ``--norm`` to the weight criteria, the calibration options to criteria
that read text, ``--replace-ridge`` to ``--replace linear``, ``--stride`` to sliding-window perplexity. Each verb
has one table of :class:`Applies` rules here. The verb checks it first (before the core is imported or a config
read) with what the user gave (the command line, an environment variable or a recipe stage), so a misspent
option is one line and exit 2 at once, e.g. ``--norm only applies with --criterion magnitude, taylor, taylor+
or auto, not ppl. Drop --norm.``

Options whose value is the default and was not given are never refused: a recipe or script that says nothing
about ``--norm`` runs as before. Refusals the core owns (``--teacher`` without kd, ``--scores`` with
``--blocks``, ``--text-field`` with a named dataset) stay there: they need the request the core builds, or also
guard the Python API.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from shortllm.errors import OptionError

Values = Mapping[str, Any]

# Criteria by what they read (the registry in shortllm.scoring is the authority; tests/cli/test_applies.py checks
# these against it without this module importing torch).
TEXT_FREE_CRITERIA = ("magnitude", "chop")  # Criterion.needs_data False: no calibration text
NORM_CRITERIA = ("magnitude", "taylor", "taylor+", "auto")  # read --norm (auto through its magnitude/taylor cuts)
CALIBRATION = ("data", "text_field", "samples", "seq_len", "seed", "add_bos", "batch_size")
SEARCH = ("search_tokens", "refine", "search_sleb")


@dataclass(frozen=True)
class Applies:
    """Rule: ``options`` (the verb function's parameter names) are read only when ``when(values)`` holds.

    ``only`` completes "--OPTION only applies ..." and is formatted with the values, e.g. ``"with --criterion
    auto, not {criterion}"``; ``hint`` replaces the default "drop --OPTION".
    """

    options: tuple[str, ...]
    when: Callable[[Values], bool]
    only: str
    hint: str = ""


def refused(rules: Iterable[Applies], given: Iterable[str], values: Values,
            flag: Callable[[str], str] = lambda name: "--" + name.replace("_", "-")) -> OptionError | None:
    """The error for the first given option a rule says the run would not read, or None.

    Args:
        given: the parameter names the user set (not left at their defaults).
        values: every parameter's value, defaults included.
        flag: how a parameter name is spelled on the command line.
    """
    given = set(given)
    for rule in rules:
        for name in rule.options:
            if name in given and not rule.when(values):
                spelled = flag(name)
                return OptionError(f"{spelled} only applies {rule.only.format(**values)}",
                                   rule.hint.format(flag=spelled, **values) or f"drop {spelled}")
    return None


def check_given(ctx: Any, rules: Iterable[Applies]) -> None:
    """Refuse what :func:`refused` finds among the options of the verb running in click context ``ctx``.

    Raises:
        OptionError: one line naming the option, when it applies and the fix.
    """
    params = {p.name: p for p in ctx.command.params}
    given = [name for name in ctx.params if _given(ctx, name)]
    err = refused(rules, given, ctx.params, lambda name: _spelling(params[name], ctx.params[name]))
    if err is not None:
        raise err


def _given(ctx: Any, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def _spelling(param: Any, value: Any) -> str:
    """``--norm``; for an on/off pair the spelling given (``--no-sleb-barriers`` when the value is off); an
    argument is ``the recipe argument``."""
    if not any(o.startswith("-") for o in param.opts):
        return f"the {param.name} argument"
    longs = [o for o in param.opts if o.startswith("--")] or list(param.opts)
    offs = [o for o in getattr(param, "secondary_opts", []) if o.startswith("--")]
    return offs[0] if offs and value is False else longs[0]


def _criterion_in(*names: str) -> Callable[[Values], bool]:
    return lambda v: v["criterion"] in names


def reads_text(criterion: str) -> bool:
    """Whether a criterion reads calibration text (all but magnitude and chop)."""
    return criterion not in TEXT_FREE_CRITERIA


def _reads_text(v: Values) -> bool:
    return reads_text(v["criterion"])


def _criterion_rules(scoring: Callable[[Values], bool]) -> list[Applies]:
    """The options only some criteria read; ``scoring``: whether the run scores at all."""
    return [
        Applies(("norm",), lambda v: scoring(v) and _criterion_in(*NORM_CRITERIA)(v),
                "with --criterion magnitude, taylor, taylor+ or auto, not {criterion}"),
        Applies(SEARCH, lambda v: scoring(v) and _criterion_in("auto")(v), "with --criterion auto"),
        Applies(("sleb_barriers",), lambda v: scoring(v) and _criterion_in("sleb")(v), "with --criterion sleb"),
    ]


TEXT_FREE = "to criteria that read calibration text, not {criterion}"
# --overwrite replaces a non-empty --out folder: without one (or with --dry-run) there is nothing to replace
OVERWRITE = Applies(("overwrite",), lambda v: v["out"] is not None and not v.get("dry_run"),
                    "when --out is written (not without --out, nor with --dry-run)")
# magnitude and chop run no forward pass: Hub kernels would swap nothing they use
KERNELS = Applies(("kernels",), _reads_text, "to criteria that run the model, not {criterion}")
SCORE = [*_criterion_rules(lambda v: True), Applies(CALIBRATION, _reads_text, TEXT_FREE), KERNELS, OVERWRITE]


def _prune_scores_now(v: Values) -> bool:
    return v["blocks"] is None and v["scores"] is None


def _fits(v: Values) -> bool:
    """Whether the prune fits a --replace stand-in (not on a dry run)."""
    return v["replace"] is not None and not v["dry_run"]


def _gguf_out(v: Values) -> bool:
    from shortllm.formats import writes_gguf

    return writes_gguf(v["out"], v["out_format"])


NOT_SCORING = "when prune scores the blocks (--ratio or --num-blocks without --scores)"
FIT_TEXT = ("data", "text_field", "seq_len", "seed", "add_bos", "batch_size")  # also read by --replace's fit
PRUNE = [
    Applies(("criterion", "protect_first", "protect_last", "plus", "offload"), _prune_scores_now, NOT_SCORING),
    Applies(("samples",), _prune_scores_now, NOT_SCORING + " (--replace fits on --replace-samples windows)"),
    *_criterion_rules(_prune_scores_now),
    Applies(("samples",), _reads_text, TEXT_FREE),
    Applies(FIT_TEXT, lambda v: (_prune_scores_now(v) and _reads_text(v)) or _fits(v),
            "to scoring with a criterion that reads calibration text, or to --replace's fit (not with --dry-run)"),
    Applies(("replace_samples", "replace_objective", "replace_ridge", "replace_epochs", "replace_lr",
             "replace_init"), lambda v: not v["dry_run"], "without --dry-run (nothing is fitted)"),
    Applies(("replace_samples", "replace_objective"), lambda v: v["replace"] is not None, "with --replace"),
    Applies(("replace_ridge",), lambda v: v["replace"] == "linear", "with --replace linear"),
    Applies(("replace_epochs", "replace_lr", "replace_init"), lambda v: v["replace"] == "block",
            "with --replace block"),
    Applies(("max_shard_size",), lambda v: not _gguf_out(v), "to a Hugging Face output (a GGUF is one file)"),
    Applies(("max_shard_size",), lambda v: not v["dry_run"], "without --dry-run (nothing is written)"),
    # a GGUF-to-GGUF prune copies bytes, a dry run of known blocks reads the config only: only scoring (or a fit)
    # loads the model
    Applies(("dtype", "device", "device_map", "kernels"),
            lambda v: _prune_scores_now(v) or (not _gguf_out(v) and not v["dry_run"]),
            "when a model is loaded: a GGUF output from --blocks or --scores copies the source's bytes, and a "
            "--dry-run of known blocks reads the config only"),
    OVERWRITE,
]


def _ppl_names(v: Values) -> list[str]:
    ppl = v["ppl"]
    if ppl is None:
        return ["wikitext2", "ptb"]
    return [p.strip() for p in str(ppl).split(",") if p.strip() and p.strip().lower() != "none"]


def _own_windows(v: Values) -> bool:
    """Some perplexity is measured with the --ppl-protocol windows (c4-gptq brings its own)."""
    return any(name != "c4-gptq" for name in _ppl_names(v))


def _tasks(v: Values) -> bool:
    return v["tasks"] is None or str(v["tasks"]).strip().lower() != "none"


EVAL = [
    Applies(("ppl_protocol", "seq_len", "ppl_bos"), _own_windows,
            "to perplexity measured with the protocol's windows (--ppl none, or c4-gptq alone, which measures "
            "as GPTQ does)"),
    Applies(("stride",), lambda v: _own_windows(v) and v["ppl_protocol"] == "sliding",
            "with --ppl-protocol sliding"),
    Applies(("bos_every",), lambda v: _own_windows(v) and v["ppl_protocol"] == "paper",
            "with --ppl-protocol paper"),
    Applies(("text_field",), lambda v: bool(_ppl_names(v)), "to --ppl files (with --ppl none no text is read)"),
    Applies(("add_bos", "num_fewshot", "include_path", "seed"), _tasks,
            "to lm-eval tasks (--tasks none runs none)"),
    Applies(("limit", "batch_size"), lambda v: bool(_ppl_names(v)) or _tasks(v),
            "to perplexity and lm-eval tasks (--ppl none --tasks none measures neither)"),
    Applies(("max_new_tokens",), lambda v: v["generate"] is not None, "with --generate"),
    OVERWRITE,
]
BENCH = [OVERWRITE]

RETRAIN = [
    Applies(("lora_r", "lora_alpha", "lora_dropout", "lora_targets"), lambda v: v["method"] == "lora",
            "to --method lora, not {method}"),
    Applies(("kd_alpha", "kd_temperature"), lambda v: v["method"] == "kd", "to --method kd, not {method}"),
    Applies(("kd_hidden_weight",), lambda v: v["method"] == "kd" and v["kd_hidden"] is not None,
            "with --kd-hidden", "give --kd-hidden nmse or cosine too, or drop {flag}"),
    Applies(("min_lr_ratio",), lambda v: v["lr_schedule"] == "cosine",
            "to --lr-schedule cosine ({lr_schedule} decays to 0)"),
    Applies(("max_grad_norm",), lambda v: not v["optimizer_in_backward"],
            "without --optimizer-in-backward (which updates each parameter before the whole gradient exists)"),
    Applies(("eval_fraction",), lambda v: v["eval_data"] is None and not v["streaming"],
            "when held-out rows are split from --data (not with --eval-data or --streaming)"),
    Applies(("keep_checkpoints",), lambda v: v["save_every"] > 0 or v["stop_after"] is not None,
            "when checkpoints are written (--save-every above 0, or --stop-after)"),
    Applies(("checkpoint_dir",), lambda v: v["save_every"] > 0 or v["stop_after"] is not None or v["resume"],
            "when checkpoints are written or read (--save-every above 0, --stop-after, --resume)"),
    Applies(("eval_every", "max_eval_rows"),
            lambda v: v["eval_data"] is not None or v["streaming"] or v["eval_fraction"] > 0,
            "when there are held-out rows (--eval-fraction above 0, --eval-data or --streaming)"),
]

RUN = [
    Applies(("recipe", "out", "model", "set_", "data_dir", "show"), lambda v: not v["list_"], "without --list",
            "drop {flag}: --list only lists the shipped recipes"),
    Applies(("json_out",), lambda v: not v["show"], "without --show (it prints the stage commands)"),
]

BY_VERB = {"score": SCORE, "prune": PRUNE, "retrain": RETRAIN, "eval": EVAL, "bench": BENCH, "run": RUN}
