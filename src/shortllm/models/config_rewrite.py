"""The config side of block surgery: rewrite a model's config for the blocks it keeps, without the model.

:func:`rewrite_config` sets the layer count and rewrites every config field tied to block positions (per-block
lists, lists of block indices, thresholds, ranges and periods; docs/architecture.md "Field kinds") so that they
select the same blocks, or refuses the cut by name. Out-of-core surgery calls it on a config alone;
:func:`shortllm.models.surgery.keep_blocks` calls it before touching the model. Also here: the checks on block
indices and the provenance a pruned config records (``config.shortllm``).
"""

from __future__ import annotations

import copy
import logging
import math
import typing
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from shortllm.errors import BlockSelectionError, UnsupportedArchitectureError, reason
from shortllm.models.arch import (
    POSITION_FIELD_NAMES,
    ArchSpec,
    PositionRule,
    check_decoder,
    language_config,
    position_pattern,
    spec_of,
)
from shortllm.wording import plural

log = logging.getLogger(__name__)

# Config lists that can have the layer count's length by coincidence but are not per-layer.
_NOT_PER_LAYER = {"architectures", "bad_words_ids", "suppress_tokens", "begin_suppress_tokens",
                  "eos_token_id", "forced_decoder_ids", "id2label", "label2id"}


def validate_indices(indices: Iterable[int], num_blocks: int, *, what: str = "block") -> list[int]:
    """Check block indices: integers in range, no duplicates. Returns them sorted.

    Raises:
        BlockSelectionError: on a negative, out-of-range or duplicated index.
    """
    seen: set[int] = set()
    for i in indices:
        if isinstance(i, bool) or not isinstance(i, int):
            raise BlockSelectionError(f"{what} index {i!r} is not an integer")
        if i < 0 or i >= num_blocks:
            raise BlockSelectionError(
                f"{what} index {i} is out of range", f"this model has blocks 0..{num_blocks - 1}"
            )
        if i in seen:
            raise BlockSelectionError(f"{what} index {i} is given twice")
        seen.add(i)
    return sorted(seen)


def original_indices(config: Any, num_blocks: int) -> list[int]:
    """Original block index of each current block (identity unless the model was pruned before)."""
    meta = getattr(config, "shortllm", None)
    if isinstance(meta, dict) and len(meta.get("kept_blocks", [])) == num_blocks:
        return list(meta["kept_blocks"])
    return list(range(num_blocks))


def _is_set(value: Any) -> bool:
    return value is not None and not (isinstance(value, (list, tuple, str, dict)) and len(value) == 0)


def _accepts_none(config: Any, name: str) -> bool:
    """Whether ``config.name = None`` passes the config class's (strict) type checks."""
    declared = getattr(type(config), "__dataclass_fields__", {}).get(name)
    if declared is None:
        return True  # a plain attribute (e.g. a hub field the class does not declare)
    kind = declared.type
    if isinstance(kind, str):
        return "None" in kind or kind == "Any"
    return kind is Any or type(None) in typing.get_args(kind)


def _renumber_indices(name: str, value: Any, keep: Sequence[int], old_count: int) -> Any:
    """Kind (b): a list of block indices -> the new indices of the kept blocks it named."""
    if not isinstance(value, (list, tuple)) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in value):
        raise UnsupportedArchitectureError(
            f"config field {name}={value!r} is not a list of block indices", "fix the model's config.json"
        )
    named = {i + old_count if i < 0 else i for i in value}
    return type(value)(j for j, i in enumerate(keep) if i in named)


def _candidates(rule: PositionRule, old: tuple[Any, ...], keep: Sequence[int],
                wanted: list[Any]) -> Iterator[tuple[Any, ...]]:
    """Values of ``rule.fields`` to try after the cut, most natural first (the caller checks each)."""
    k = len(keep)
    periodic = rule.kind in ("every_nth", "every_nth_from_first") or (
        rule.kind == "every_nth_or_cycle" and isinstance(old[0], int))
    if rule.kind in ("below", "even_below"):  # a threshold moves with the blocks
        yield (sum(1 for i in keep if i < old[0]),)
    elif rule.kind == "range":  # last == -1 means the last block, whichever it is
        first = sum(1 for i in keep if i < old[0])
        last = -1 if old[1] == -1 else sum(1 for i in keep if i <= old[1]) - 1
        yield (first, last) if last == -1 or last >= first else (k, k - 1)  # empty: never -1
    yield old
    if rule.kind == "even_below":
        yield from ((t,) for t in range(k + 1))
    elif periodic:
        yield from ((p,) for p in range(1, k + 2))
    elif rule.kind == "period_offset":
        yield from ((p, o) for p in range(1, k + 2) for o in range(p))
    elif rule.kind in ("cycle", "every_nth_or_cycle"):
        for length in range(1, k + 1):  # the shortest repeating prefix; at worst the whole list
            part = wanted[:length]
            yield ("".join(part) if isinstance(old[0], str) else type(old[0])(part),)
    elif rule.kind == "repeat_groups":
        group = list(old[0][0][0]) if len(old[0]) == 1 else []
        if group and len(wanted) % len(group) == 0:
            yield ([[group, len(wanted) // len(group)]],)
        yield ([[list(wanted), 1]],)


def _describe(rule: PositionRule, values: tuple[Any, ...]) -> str:
    """``field=value (what it selects: how)`` for messages."""
    shown = ", ".join(f"{f}={v!r}" for f, v in zip(rule.fields, values))
    p = values[0]
    if rule.kind in ("every_nth", "every_nth_or_cycle") and isinstance(p, int):
        how = f"blocks i with (i + 1) % {p} == 0"
    elif rule.kind == "every_nth_from_first":
        how = f"blocks i with i % {p} == 0"
    elif rule.kind == "period_offset":
        how = f"blocks i with i % {p} == {values[1]}"
    elif rule.kind in ("cycle", "every_nth_or_cycle"):
        how = f"the pattern {p!r} repeated"
    else:
        how = "by position"
    return f"{shown} ({rule.means}: {how})"


def _period(rule: PositionRule, values: tuple[Any, ...]) -> int:
    """The period of a rule's pattern: a cut that removes whole periods keeps it."""
    if rule.kind == "even_below":
        return 2
    if isinstance(values[0], int) and rule.kind not in ("below", "range"):
        return max(1, values[0])
    if rule.kind in ("cycle", "every_nth_or_cycle"):
        return max(1, len(values[0]))
    return 1


def _rule_changes(config: Any, rule: PositionRule, keep: Sequence[int], old_count: int,
                  changes: dict[str, Any]) -> tuple[str, int] | None:
    """Kind (c): add to ``changes`` the values that keep ``rule``'s pattern on the kept blocks.

    Returns:
        None, or (description, period) of a rule that no value can state after this cut.

    Raises:
        UnsupportedArchitectureError: a value the rule's kind cannot read.
    """
    def value_of(name: str) -> Any:
        if _is_set(getattr(config, name, None)):
            return getattr(config, name)
        return next((getattr(config, a) for a in rule.aliases if _is_set(getattr(config, a, None))), None)

    values = tuple(value_of(f) for f in rule.fields)
    if not any(_is_set(v) for v in values):
        return None
    context = tuple(getattr(config, f, None) for f in rule.context)
    before = position_pattern(rule, values + context, old_count)
    if before is None:
        raise UnsupportedArchitectureError(
            f"config field {_describe(rule, values)} is not a value shortllm can read",
            "fix the model's config.json",
        )
    wanted = [before[i] for i in keep]
    new = next((c for c in _candidates(rule, values, keep, wanted)
                if position_pattern(rule, c + context, len(keep)) == wanted), None)
    if new is None and rule.into is not None:
        # Every block selected by the period, and the blocks it left out listed in the index field.
        off = {j for j, selected in enumerate(wanted) if not selected}
        listed = changes.get(rule.into, getattr(config, rule.into, None) or [])
        changes[rule.into] = sorted(set(listed) | off)
        new = (1,)
    elif new is None and not rule.runtime and all(
            _accepts_none(config, f) for f in (*rule.fields, *rule.aliases)):
        new = (None,) * len(rule.fields)  # the per-block list the config stores says it all
    elif new is None:
        return _describe(rule, values), _period(rule, values)
    changes.update(zip(rule.fields, new))
    changes.update((alias, new[0]) for alias in rule.aliases if hasattr(config, alias))
    return None


def _config_changes(config: Any, spec: ArchSpec, keep: Sequence[int], old_count: int) -> dict[str, Any]:
    """The config fields (except provenance) that keeping ``keep`` of ``old_count`` blocks changes.

    Raises:
        BlockSelectionError, UnsupportedArchitectureError: see :func:`rewrite_config`.
    """
    model_type = getattr(config, "model_type", "?")
    if getattr(config, "scale_attn_by_inverse_layer_idx", False) and keep != list(range(len(keep))):
        # GPT-2's optional 1/(layer_idx+1) attention scale is fixed by position: a moved block would be
        # rescaled on reload, so the saved model could not compute what the pruned one does.
        raise BlockSelectionError(
            "this model scales attention by its block index (scale_attn_by_inverse_layer_idx), "
            "so only trailing blocks can be removed exactly",
            f"remove only the last blocks, e.g. --blocks {old_count - 1}",
        )
    if spec.fixed_first_block and keep[0] != 0:
        raise BlockSelectionError(
            f"block 0 of a '{model_type}' model is built differently from the others (no other block can "
            "take its place), so it cannot be removed",
            "keep block 0",
        )
    declared = set(spec.per_layer_keys) | set(spec.index_keys) | {
        name for rule in spec.position_rules for name in (*rule.fields, *rule.aliases)}
    stray = [f"{name}={getattr(config, name)!r}" for name in sorted(POSITION_FIELD_NAMES - declared)
             if _is_set(getattr(config, name, None))]
    if stray:
        raise UnsupportedArchitectureError(
            f"the config of model type '{model_type}' names blocks by position ({', '.join(stray)}), "
            "and shortllm's architecture table does not say how to rewrite that for this type",
            "add the type and its position fields to ARCHITECTURES in shortllm/models/arch.py",
        )

    changes: dict[str, Any] = {spec.layer_count_key: len(keep)}
    not_lists = (_NOT_PER_LAYER | POSITION_FIELD_NAMES | declared) - set(spec.per_layer_keys)
    for name, value in vars(config).items():  # (a) per-block lists, declared or of the layer count's length
        if name in not_lists or name in changes or (name.startswith("_") and name not in spec.per_layer_keys):
            continue
        if isinstance(value, (list, tuple)) and len(value) == old_count and (
                name in spec.per_layer_keys or old_count > 1):
            changes[name] = type(value)(value[i] for i in keep)
    for name in spec.index_keys:  # (b) lists of block indices
        if getattr(config, name, None) is not None:
            changes[name] = _renumber_indices(name, getattr(config, name), keep, old_count)
    # (c) thresholds, ranges and periods
    outcomes = [_rule_changes(config, rule, keep, old_count, changes) for rule in spec.position_rules]
    failed = [outcome for outcome in outcomes if outcome]
    if failed:
        removed = [i for i in range(old_count) if i not in set(keep)]
        period = math.lcm(*(p for _, p in failed))
        raise BlockSelectionError(
            f"removing blocks {removed} from this '{model_type}' model cannot be written in its config: "
            + "; ".join(d for d, _ in failed) + " would select other blocks after the cut and no value of "
            + ("it" if len(failed) == 1 else "them") + " selects the same ones",
            f"remove only trailing blocks or runs of {period} consecutive blocks, which keep the pattern",
        )
    return {k: v for k, v in changes.items() if k == spec.layer_count_key or getattr(config, k, None) != v}


def rewrite_config(config: Any, keep: Sequence[int], old_count: int | None = None) -> list[str]:
    """Rewrite ``config`` in place for a model that keeps only blocks ``keep`` (current indices), in order.

    This is the whole config side of surgery and needs no model (out-of-core surgery calls it on a config
    alone). It sets the layer count; filters (a) per-block lists; renumbers (b) lists of block indices;
    rewrites (c) thresholds, ranges and periods so they select the same blocks, turning a period no value
    can keep into an explicit list where the family allows it; applies the same to a nested
    ``text_config`` of the same depth; and records provenance in ``config.shortllm``. Nothing is changed
    when it raises.

    For a multimodal checkpoint in the table (``gemma3``, ``mistral3``, ``llava``, ``qwen2_5_vl``, ...) all of
    this happens in the language model's sub-config (``text_config``, following the rules of its own
    ``model_type``, e.g. ``gemma3_text``); the vision tower's config and every other top-level field are left
    as they are, and provenance goes on the top-level config (the one ``save_pretrained`` writes).

    Args:
        config: a Hugging Face config of a decoder family or a multimodal checkpoint (see
            ``arch.ARCHITECTURES``).
        keep: indices of the blocks kept, at least one.
        old_count: the number of blocks before the cut; default: the config's layer count.

    Returns:
        The names of the fields that changed (``text_config.x`` for nested ones), provenance included.

    Raises:
        BlockSelectionError: bad indices, an empty selection, or a cut that a position field cannot state
            (the message names the field; the hint says which cuts keep it).
        UnsupportedArchitectureError: a multimodal or encoder config, or position fields the architecture
            table does not describe for this model type.
    """
    check_decoder(config)
    lm_config = language_config(config)  # config itself, or a multimodal checkpoint's text_config
    spec = spec_of(lm_config)
    if old_count is None:
        old_count = int(getattr(lm_config, spec.layer_count_key))
    keep = validate_indices(list(keep), old_count)
    if not keep:
        raise BlockSelectionError(
            f"removing all {plural(old_count, 'block')} leaves no model", "keep at least one block"
        )
    if lm_config is not config:  # multimodal: the language model's sub-config only; vision_config untouched
        targets = [("", config, {}), (f"{spec_of(config).text_config_key}.", lm_config,
                                      _config_changes(lm_config, spec, keep, old_count))]
    else:
        targets = [("", config, _config_changes(config, spec, keep, old_count))]
        text_config = getattr(config, "text_config", None)
        if text_config is not None and text_config is not config and getattr(
                text_config, spec.layer_count_key, None) == old_count:
            targets.append(("text_config.", text_config, _config_changes(text_config, spec, keep, old_count)))
    origin = original_indices(config, old_count)
    meta = getattr(config, "shortllm", None)
    original_count = meta.get("original_num_blocks", old_count) if isinstance(meta, dict) else old_count
    targets[0][2]["shortllm"] = {
        "original_num_blocks": original_count, "kept_blocks": [origin[i] for i in keep],
    }

    for _, target, changes in targets:  # strict configs check types on assignment: try a copy first
        trial = copy.deepcopy(target)
        for name, value in changes.items():
            try:
                setattr(trial, name, value)
            except Exception as err:  # noqa: BLE001 - any validator failure means the value is not allowed
                raise UnsupportedArchitectureError(
                    f"the config of model type '{getattr(config, 'model_type', '?')}' refuses "
                    f"{name}={value!r} after the cut: {reason(err)}",
                    "report this model type to shortllm",
                ) from err
    changed = []
    for prefix, target, changes in targets:
        for name, value in changes.items():
            setattr(target, name, value)
            changed.append(prefix + name)
    log.debug("rewrote config fields: %s", ", ".join(changed))
    return changed
