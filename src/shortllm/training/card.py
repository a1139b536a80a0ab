"""The model card (``README.md``) of a retrained folder: what was healed, how, on what, and what it gained."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shortllm.pruning.export import card
from shortllm.wording import plural

TAGS = ["shortllm", "depth-pruning", "healing"]


def original_hub_id(manifest: dict[str, Any] | None) -> str | None:
    """The hub id of the unpruned model a folder descends from, when its ``shortllm.json`` records one.

    A prune records its source's ``hub_id``; a retrain records ``original_hub_id`` (this function's answer for
    its own input), so a chain prune -> retrain -> retrain keeps naming the hub original.
    """
    if not manifest:
        return None
    source = manifest.get("source") or {}
    if manifest.get("verb") == "prune":
        return source.get("hub_id")
    return source.get("original_hub_id")


def _method(cfg: Any, teacher: str | None, adapter: bool, partial: bool = False) -> str:
    if cfg.method == "cpt":
        return "continued pretraining (" + ("the chosen weights" if partial else "every weight") + \
            " trained on the next-token loss)"
    if cfg.method == "kd":
        kd = cfg.kd
        if kd.alpha == 1:  # the default: forward KL only, as Minitron
            return (f"knowledge distillation from `{teacher}` (loss = T^2 x KL(teacher || student), forward KL only, "
                    f"T = {kd.temperature:g})")
        return (f"knowledge distillation from `{teacher}` (loss = {kd.alpha:g} x T^2 x KL(teacher || student) + "
                f"{1 - kd.alpha:g} x next-token loss, T = {kd.temperature:g})")
    lora = cfg.lora
    saved = "saved as an adapter (not merged)" if adapter else "merged into the weights"
    return f"LoRA (rank {lora.r}, alpha {lora.alpha}, dropout {lora.dropout:g}), {saved}"


def _extras(cfg: Any, result: Any) -> list[tuple[str, str]]:
    """Card rows for the healing options beyond the method: hidden-state distillation, teacher correction and
    storage, the optimizer in the backward, partial-layer training."""
    rows = []
    if cfg.method == "kd" and cfg.kd.hidden:
        rows.append(("hidden-state distillation", f"{cfg.kd.hidden} at matched depths, weight {cfg.kd.hidden_weight:g}"))
    if cfg.method == "kd" and cfg.kd.teacher_warmup_steps:
        rows.append(("teacher correction", f"{plural(cfg.kd.teacher_warmup_steps, 'step')} of fine-tuning first"))
    if cfg.method == "kd" and cfg.kd.teacher_dtype:
        rows.append(("teacher weights", f"stored in {cfg.kd.teacher_dtype}, computed in the precision it was loaded in"))
    if cfg.optimizer_in_backward:
        rows.append(("optimizer", "AdamW applied in the backward pass, one parameter at a time (no gradient clipping)"))
    partial = getattr(result, "partial", None)
    if partial:
        blocks = ", ".join(map(str, partial.get("blocks") or []))
        head = " and the head" if blocks and partial.get("head") else "the head only" if partial.get("head") else ""
        rows.append(("trained blocks", f"{blocks}{head} (the rest frozen)"))
    return rows


def _data(info: dict[str, Any]) -> str:
    spec = info.get("spec")
    if info.get("streaming"):
        return f"`{spec}` (streamed text, blocks of the sequence length)"
    rows = info.get("train_rows")
    what = "instruction records" if info.get("format") == "instruction" else "text"
    return f"`{spec}` ({what}; {plural(rows, 'training row')})" if rows is not None else f"`{spec}` ({what})"


def _held_out(info: dict[str, Any]) -> str:
    ev = info.get("eval") or {}
    rows = info.get("eval_rows")
    count = plural(rows, "row") if rows is not None else "rows"
    if ev.get("held_out_from_train"):
        return f"{count} held out from the training data"
    return f"{count} of `{ev.get('spec')}`" if ev.get("spec") else count


def _loss(value: float | None) -> str:
    return f"{value:.4f}" if value is not None else "not measured"


def training_losses(result: Any) -> list[tuple[str, str]]:
    """The last step's training loss, named for what it is: the objective (a KL for kd) and, when that is not
    a cross-entropy, the training cross-entropy beside it, the quantity the held-out loss measures."""
    objective = getattr(result, "objective", "cross-entropy")
    if objective == "cross-entropy":
        return [("final training cross-entropy", _loss(result.final_loss))]
    return [(f"final training objective ({objective})", _loss(result.final_loss)),
            ("final training cross-entropy", _loss(getattr(result, "final_ce", None)))]


def retrain_card(cfg: Any, result: Any, source: Any, manifest: dict[str, Any] | None, adapter: bool) -> str:
    """The ``README.md`` of a retrain's ``--out``.

    Args:
        cfg: the run's ``TrainConfig``.
        result: its ``RetrainResult`` (finished).
        source: the input model's ``ModelSource``.
        manifest: the input folder's ``shortllm.json`` (a prune's tells what was removed), or None.
        adapter: the folder holds a LoRA adapter (``--save-adapter``) instead of a full model.

    Returns:
        The card: ``library_name`` transformers (peft for an adapter), tags shortllm / depth-pruning / healing,
        ``base_model`` the hub id it descends from when known (for an adapter: the input model's own hub id, the
        model it applies to), what was done and the held-out loss before and after.
    """
    name = Path(cfg.out).name
    model = source.hub_id or source.ref
    base_model = source.hub_id if adapter else (original_hub_id(manifest) or source.hub_id)
    paragraphs = [f"`{model}` healed with [shortllm](https://pypi.org/project/shortllm/) by "
                  f"{_method(cfg, result.teacher, adapter, bool(getattr(result, 'partial', None)))}."]
    if manifest and manifest.get("verb") == "prune":
        pruned = manifest.get("results") or {}
        original = (manifest.get("source") or {}).get("spec")
        removed = pruned.get("removed_original") or []
        paragraphs.append(
            f"That model was depth-pruned from `{original}`: {len(removed)} of {pruned.get('num_blocks_before')} "
            f"transformer blocks removed.\n\n- Removed blocks (original indices): {', '.join(map(str, removed))}\n"
            f"- Chosen by: {pruned.get('how')}")
    if adapter:
        paragraphs.append(
            f"This folder holds the LoRA adapter only. Load it with peft on top of `{model}`: "
            f"`PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(\"{model}\"), \"{name}\")`, or "
            "retrain without `--save-adapter` to get a merged, plain checkpoint.")
    else:
        paragraphs.append("It is a plain Hugging Face checkpoint: load it with "
                          "`AutoModelForCausalLM.from_pretrained` — no custom code.")
    rows = [
        ("method", cfg.method),
        *_extras(cfg, result),
        ("optimizer steps", f"{result.steps} (batch of {plural(result.global_batch, 'row')} "
                            f"of at most {plural(cfg.seq_len, 'token')})"),
        ("tokens seen", f"{result.tokens_seen:,}"),
        ("training data", _data(result.data)),
        ("held-out data", _held_out(result.data)),
        ("held-out cross-entropy before", _loss(result.initial_eval_loss)),
        ("held-out cross-entropy after", _loss(result.final_eval_loss)),
        *([("weights kept (--keep-best)",
            f"step {result.best['step']}: held-out cross-entropy {_loss(result.best['eval_loss'])}")]
          if getattr(result, "best", None) else []),
        *training_losses(result),
        ("trainable parameters", f"{result.trainable_params:,} of {result.params:,}"),
        ("training time", f"{result.wall_time_s:.1f} s on {plural(result.world_size, 'process', 'processes')}"
                          + (f" (limit {cfg.max_time:g} s, --max-time)" if cfg.max_time is not None else "")),
    ]
    table = "| | |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)
    body = "\n\n".join(paragraphs) + "\n\n" + table + "\n"
    footer = ("See `shortllm.json` for the full provenance (options, data fingerprints, versions) and "
              "`train_curve.png` for the loss curves.\n")
    tags = TAGS + (["lora"] if cfg.method == "lora" else [])
    return card(name, body, cfg.command, tags=tags, base_model=base_model,
                library_name="peft" if adapter else "transformers", footer=footer)


__all__ = ["original_hub_id", "retrain_card"]
