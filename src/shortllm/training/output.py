"""What a retrain returns and writes: :class:`RetrainResult`, and the healed folder of a finished run (the
model or its LoRA adapter, the model card, the manifest and the training curve), written atomically by the main
process.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from shortllm.models.loading import ModelSource
from shortllm.pruning.export import atomic_dir, save_model, write_manifest
from shortllm.training.config import TrainConfig
from shortllm.training.inputs import original_model

log = logging.getLogger(__name__)


@dataclass
class RetrainResult:
    """What a retrain session did; ``as_dict`` is what the CLI prints and the manifest records."""

    method: str
    model: str
    finished: bool
    steps: int
    total_steps: int  # planned; with --max-time an upper bound
    tokens_seen: int
    wall_time_s: float
    final_loss: float | None
    initial_eval_loss: float | None
    final_eval_loss: float | None
    teacher: str | None
    trainable_params: int
    params: int
    world_size: int
    global_batch: int
    warmup_steps: int | None  # None: --max-time without --warmup-steps (the first 5% of the progress)
    data: dict[str, Any]
    max_time_s: float | None = None  # --max-time
    time_up: bool = False  # --max-time ended the run (its clock decided, even on the last planned step)
    saved: str | None = None  # "merged model" | "adapter" | "model"
    out: str | None = None
    checkpoint: str | None = None  # set when the session stopped early
    resumed_from: str | None = None
    best: dict[str, Any] | None = None  # --keep-best: {"step", "eval_loss"} of the weights in --out
    partial: dict[str, Any] | None = None  # --train-blocks/--train-head: what trained (training/freeze.py)
    loss_path: str | None = None  # "chunked head" | "teacher support" (--kd-support) | "full logits" (training/objectives/forward.py)
    teacher_shared_blocks: int = 0  # kd: leading blocks the teacher took from the student (forward.shared_prefix)
    peak_rss_mb: float | None = None  # this process's peak resident memory so far
    is_main: bool = True
    final_ce: float | None = None  # the last step's training cross-entropy: what compares with the held-out loss
    objective: str = "cross-entropy"  # what final_loss is (losses.objective_name): a KL for kd
    loss_curve: list[dict[str, float]] = field(default_factory=list)
    eval_curve: list[dict[str, float]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def as_dict(self, curves: bool = True) -> dict[str, Any]:
        d = asdict(self)
        d.pop("is_main")
        d["tokens_per_s"] = round(self.tokens_seen / self.wall_time_s, 2) if self.wall_time_s else None
        d["timings_s"] = {k: round(v, 3) for k, v in d.pop("timings").items()}
        if not curves:
            d.pop("loss_curve")
            d.pop("eval_curve")
        return d


def save_final(cfg: TrainConfig, tr: Any, loaded: Any, source: ModelSource, manifest: dict[str, Any] | None,
                result: RetrainResult, t0: float) -> None:
    """Write the healed model, its model card, the manifest and the curve into ``--out`` (main process; others
    wait)."""
    from accelerate.utils import DistributedType

    from shortllm.training.card import original_hub_id, retrain_card
    from shortllm.training.plot import plot_curve

    acc = tr.accelerator
    t = time.perf_counter()
    sharded = acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    state_dict = acc.get_state_dict(tr.model) if sharded else None  # collective: every process gathers
    save_adapter = cfg.method == "lora" and (cfg.lora.save_adapter or sharded)
    if cfg.method == "lora" and sharded and not cfg.lora.save_adapter:
        log.warning("sharded training (FSDP/DeepSpeed): saving the LoRA adapter; merge it on one device")
    if acc.is_main_process:
        log.info("Saving the healed model to %s", cfg.out, extra={"phase": True})
        model = acc.unwrap_model(tr.model)
        if cfg.method == "lora" and not save_adapter:
            from shortllm.training.lora import merge

            model = merge(model)
        result.saved = "adapter" if save_adapter else ("merged model" if cfg.method == "lora" else "model")
        with atomic_dir(cfg.out, cfg.overwrite) as tmp:
            if state_dict is not None:
                model.save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
                if loaded.tokenizer is not None:
                    loaded.tokenizer.save_pretrained(tmp)
            else:
                save_model(model, loaded.tokenizer, tmp)
            plot_curve(result.loss_curve, result.eval_curve,
                       f"shortllm retrain --method {cfg.method}: {source.spec}", tmp / "train_curve.png")
            result.out = str(cfg.out)
            result.timings["save"] = time.perf_counter() - t
            result.timings["total"] = time.perf_counter() - t0
            original = original_model(manifest) if manifest else None
            # after save_pretrained: it replaces the template card peft writes for an adapter
            (tmp / "README.md").write_text(retrain_card(cfg, result, source, manifest, adapter=save_adapter))
            write_manifest(
                tmp, "retrain", options={**cfg.as_dict(), "command": cfg.command},
                source={**source.record(model.config), "fingerprint": tr.identity["model_fingerprint"],
                        "original": original, "original_hub_id": original_hub_id(manifest) or source.hub_id},
                results=result.as_dict(), timings=result.timings,
            )
    else:
        result.out = str(cfg.out)
    acc.wait_for_everyone()
