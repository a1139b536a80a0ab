"""The retrain model card's metadata rules, on hand-built inputs."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from huggingface_hub import ModelCard
from huggingface_hub.utils import validate_repo_id

from shortllm.training.card import retrain_card
from shortllm.training.config import KDOptions, LoraOptions

HUB = "HuggingFaceTB/SmolLM2-135M-Instruct"
PRUNED_FROM_HUB = {"verb": "prune", "source": {"spec": HUB, "hub_id": HUB},
                   "results": {"removed_original": [20, 21], "num_blocks_before": 30, "how": "criterion ppl"}}


def _inputs(method: str):
    cfg = SimpleNamespace(method=method, out=Path("/runs/healed"), seq_len=32, command="shortllm retrain ...",
                          lora=LoraOptions(), kd=KDOptions(), optimizer_in_backward=False, max_time=None)
    result = SimpleNamespace(teacher=HUB if method == "kd" else None, steps=3, global_batch=1, tokens_seen=96,
                             data={"spec": "c4", "format": "text", "train_rows": 1, "eval_rows": 1,
                                   "eval": {"held_out_from_train": True}},
                             initial_eval_loss=None, final_eval_loss=2.5, final_loss=2.25, trainable_params=10,
                             params=20, wall_time_s=1.0, world_size=1)
    return cfg, result


@pytest.mark.parametrize("method,adapter,source_hub,manifest,base", [
    ("cpt", False, None, PRUNED_FROM_HUB, HUB),  # a local pruned folder names its hub original
    ("kd", False, None, None, None),  # nothing known: no base_model
    ("lora", False, "someone/pruned-model", None, "someone/pruned-model"),  # a hub input is the base
    ("lora", True, "someone/pruned-model", PRUNED_FROM_HUB, "someone/pruned-model"),  # an adapter's base: its input
    ("lora", True, None, PRUNED_FROM_HUB, None),  # an adapter on a local folder: the original would be wrong
])
def test_base_model_is_a_hub_id_or_absent(method, adapter, source_hub, manifest, base):
    cfg, result = _inputs(method)
    source = SimpleNamespace(hub_id=source_hub, ref=source_hub or "/runs/pruned")
    card = ModelCard(retrain_card(cfg, result, source, manifest, adapter=adapter))
    assert card.data.base_model == base
    if base:
        validate_repo_id(card.data.base_model)
    assert card.data.library_name == ("peft" if adapter else "transformers")
    assert "| held-out cross-entropy before | not measured |" in card.text and "| held-out cross-entropy after | 2.5000 |" in card.text
    assert "(batch of 1 row of at most 32 tokens)" in card.text and "(text; 1 training row)" in card.text


def test_card_names_the_healing_options():
    # hidden-state distillation, teacher correction and partial-layer training are part of "how it was healed"
    cfg, result = _inputs("kd")
    cfg.kd = KDOptions(hidden="nmse", hidden_weight=0.5, teacher_warmup_steps=4, teacher_dtype="bfloat16")
    cfg.optimizer_in_backward = True
    result.partial = {"blocks": [20, 21, 22], "head": True, "trainable_params": 5, "frozen_params": 15}
    text = ModelCard(retrain_card(cfg, result, SimpleNamespace(hub_id=None, ref="/p"), None, adapter=False)).text
    assert "| hidden-state distillation | nmse at matched depths, weight 0.5 |" in text
    assert "| teacher correction | 4 steps of fine-tuning first |" in text
    assert "| teacher weights | stored in bfloat16, computed in the precision it was loaded in |" in text
    assert "| optimizer | AdamW applied in the backward pass, one parameter at a time (no gradient clipping) |" in text
    assert "| trained blocks | 20, 21, 22 and the head (the rest frozen) |" in text
    cfg, result = _inputs("cpt")  # none of them: no such rows
    plain = ModelCard(retrain_card(cfg, result, SimpleNamespace(hub_id=None, ref="/p"), None, adapter=False)).text
    assert "hidden-state" not in plain and "trained blocks" not in plain and "teacher correction" not in plain
    assert "teacher weights" not in plain and "backward pass" not in plain


def test_a_kd_card_names_its_objective_and_shows_the_cross_entropy_beside_it():
    cfg, result = _inputs("kd")
    result.final_loss, result.final_ce, result.objective = 0.1295, 4.61, "KL to the teacher"
    card = retrain_card(cfg, result, SimpleNamespace(hub_id=None, ref="/runs/pruned"), None, adapter=False)
    assert "| final training objective (KL to the teacher) | 0.1295 |" in card
    assert "| final training cross-entropy | 4.6100 |" in card
    assert "final training loss" not in card


def test_objective_names():
    from shortllm.training.objectives.losses import objective_name

    assert objective_name(False, 0.5) == "cross-entropy"
    assert objective_name(True, 1.0) == "KL to the teacher"
    assert objective_name(True, 0.5) == "0.5 x KL to the teacher + 0.5 x cross-entropy"
    assert objective_name(True, 1.0, 0.1) == "1 x KL to the teacher + 0.1 x hidden-state loss"
    assert objective_name(True, 0.0) == "cross-entropy"


def _curve(n, kl_weight):
    """A kd loss curve: objective = w * KL + (1 - w) * CE."""
    points = []
    for step in range(1, n + 1):
        ce, kl = 4.0 - 0.1 * step, 0.5 - 0.01 * step
        points.append({"step": step, "loss": kl_weight * kl + (1 - kl_weight) * ce, "ce": ce, "kl": kl})
    return points


def test_the_curve_shows_each_quantity_once_with_whole_steps(tmp_path):
    from shortllm.training.plot import plot_curve

    held = [{"step": 0, "loss": 4.2}, {"step": 3, "loss": 3.9}]
    kd = plot_curve(_curve(3, 1.0), held, "kd", tmp_path / "kd.png")
    assert kd["labels"] == ["train CE", "train KL (x T^2)", "held-out CE"]  # the objective is the KL: not twice
    mixed = plot_curve(_curve(3, 0.5), held, "kd", tmp_path / "mixed.png")
    assert mixed["labels"] == ["train CE", "train KL (x T^2)", "train objective", "held-out CE"]
    lora = plot_curve([{"step": s, "loss": 3.0 / s, "ce": 3.0 / s} for s in (1, 2, 3)], held, "lora",
                      tmp_path / "lora.png")
    assert lora["labels"] == ["train CE", "held-out CE"]
    for drawn in (kd, mixed, lora):
        assert all(t == int(t) for t in drawn["xticks"]), drawn["xticks"]
