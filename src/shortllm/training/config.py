"""What one retrain run is: the options, their checks, and the run identity that resume relies on."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shortllm.errors import TrainingError  # noqa: F401  (re-exported for callers of this module)
from shortllm.models.loading import LoadSettings

METHODS = ("lora", "cpt", "kd")
HIDDEN_LOSSES = ("nmse", "cosine")  # --kd-hidden (training/objectives/losses.py)
FORMATS = ("auto", "text", "instruction")
MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
TEACHER_DTYPES = ("float32", "bfloat16", "float16")  # --teacher-dtype (training/objectives/teacher.py)
LR_SCHEDULES = ("cosine", "linear")



@dataclass(frozen=True)
class LoraOptions:
    """peft LoRA settings; the defaults are the paper's (r=8, alpha=16, dropout 0.05)."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    targets: tuple[str, ...] | None = None  # None: every attention and MLP projection of the architecture
    save_adapter: bool = False  # keep the adapter only instead of merging it into a full model


TAIL_SAMPLES = 64  # --kd-tail-samples when --kd-support is given alone


@dataclass(frozen=True)
class KDOptions:
    """Distillation: loss = alpha * T^2 * KL(teacher || student at T) + (1 - alpha) * CE.

    ``alpha`` is 1 by default: Minitron's logit distillation (Sreenivas et al. 2024, arXiv 2408.11796) uses the
    forward KL alone, with no cross-entropy term (docs/retrain.md).
    """

    teacher: str | None = None  # None: the unpruned source named in the model folder's shortllm.json
    alpha: float = 1.0
    temperature: float = 1.0
    hidden: str | None = None  # nmse | cosine: also match kept blocks' outputs to their teacher counterparts'
    hidden_weight: float = 1.0  # weight of that term: alpha*KL + (1-alpha)*CE + hidden_weight*H
    teacher_warmup_steps: int = 0  # fine-tune the teacher on the healing data first (Minitron's correction)
    teacher_dtype: str | None = None  # storage of the teacher's weights; None: as loaded (--dtype) (training/objectives/teacher.py)
    support: int | None = None  # estimate KL and CE at the teacher's k most probable tokens... (losses.support_sums)
    tail_samples: int | None = None  # ...and this many draws from the rest (None: TAIL_SAMPLES); no support: exact

    def support_pair(self) -> tuple[int, int] | None:
        """``(k, m)`` of ``--kd-support`` / ``--kd-tail-samples``, or None for the exact KL."""
        if self.support is None:
            return None
        return self.support, TAIL_SAMPLES if self.tail_samples is None else self.tail_samples


@dataclass(frozen=True)
class DataOptions:
    """Training text: a data spec (docs/data.md), its format, and how the held-out split is made."""

    data: str = "pydoc:train"
    data_dir: str | None = None
    text_field: str = "text"
    format: str = "auto"  # auto | text | instruction (Alpaca instruction/input/output records)
    eval_data: str | None = None  # held-out data; None: hold out eval_fraction of the training rows
    eval_fraction: float = 0.05
    max_eval_rows: int | None = 64  # None: sized to the run (training/data/rows.py: eval_rows_for)
    streaming: bool = False  # read plain text lazily (corpora larger than memory), in corpus order...
    shuffle_window: int = 1  # ...shuffled within windows of this many blocks (1: no shuffle)


@dataclass(frozen=True)
class TrainConfig:
    """Every option of a retrain run (built by ``cli/retrain.py``)."""

    method: str
    model: str | None = None
    out: Path | None = None
    data: DataOptions = field(default_factory=DataOptions)
    seq_len: int = 256
    batch_size: int = 4  # rows per device per micro-step
    grad_accum: int = 1
    max_steps: int | None = None
    max_tokens: int | None = None  # None and no max_steps: one pass over the training rows
    max_time: float | None = None  # seconds of training (loading excluded); the steps above are then a bound
    lr: float = 1e-4
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int | None = None  # None: 5% of the steps (at least 1 when there are 20 or more)
    min_lr_ratio: float = 0.1  # cosine decays to this fraction of lr
    lr_schedule: str = "cosine"  # after warmup: cosine (to min_lr_ratio) | linear (to 0, as HF Trainer's default)
    max_grad_norm: float = 1.0
    lora: LoraOptions = field(default_factory=LoraOptions)
    kd: KDOptions = field(default_factory=KDOptions)
    eval_every: int = 50  # 0: only at the end
    save_every: int = 100  # 0: no intermediate checkpoints
    keep_checkpoints: int = 2
    checkpoint_dir: Path | None = None  # None: "<out>.checkpoints" beside --out
    resume: bool = False
    stop_after: int | None = None  # end this session after N steps (checkpointed); continue with resume
    keep_best: bool = False  # save the weights of the lowest held-out loss; --out gets those (training/checkpoints/best.py)
    train_blocks: str | None = None  # cpt/kd: train only these blocks (training/freeze.py), the rest frozen
    train_head: bool = False  # with train_blocks (or alone): also train the output head and final norm
    gradient_checkpointing: bool = False
    optimizer_in_backward: bool = False  # step each parameter as its gradient completes (training/step_in_backward.py)
    mixed_precision: str = "auto"  # auto: bf16 on CUDA when supported, else none
    seed: int = 1234
    settings: LoadSettings = field(default_factory=lambda: LoadSettings(dtype="float32"))
    overwrite: bool = False
    command: str = "shortllm retrain"

    def checkpoints_path(self) -> Path:
        """Where checkpoints go: ``--checkpoint-dir``, else ``<out>.checkpoints`` beside ``--out``."""
        if self.checkpoint_dir is not None:
            return Path(self.checkpoint_dir)
        assert self.out is not None
        out = Path(self.out)
        return out.parent / f"{out.name}.checkpoints"

    def as_dict(self) -> dict[str, Any]:
        """JSON-able options for the manifest."""
        d = asdict(self)
        d["out"] = str(self.out) if self.out else None
        d["checkpoint_dir"] = str(self.checkpoints_path()) if self.out or self.checkpoint_dir else None
        return d


def _bad(message: str, hint: str | None = None) -> TrainingError:
    return TrainingError(message, hint)


def validate(cfg: TrainConfig) -> None:
    """Check the options before anything slow happens.

    Raises:
        TrainingError: an unknown method/format/precision, a non-positive size or rate, a bad ratio.
    """
    if cfg.method not in METHODS:
        raise _bad(f"unknown --method '{cfg.method}'", f"use one of {', '.join(METHODS)}")
    if cfg.data.format not in FORMATS:
        raise _bad(f"unknown --format '{cfg.data.format}'", f"use one of {', '.join(FORMATS)}")
    if cfg.mixed_precision not in MIXED_PRECISION:
        raise _bad(f"unknown --mixed-precision '{cfg.mixed_precision}'", f"use one of {', '.join(MIXED_PRECISION)}")
    if cfg.lr_schedule not in LR_SCHEDULES:
        raise _bad(f"unknown --lr-schedule '{cfg.lr_schedule}'", f"use one of {', '.join(LR_SCHEDULES)}")
    if len(cfg.betas) != 2 or not all(0 <= b < 1 for b in cfg.betas):
        raise _bad(f"--adam-betas {','.join(map(str, cfg.betas))} must be two numbers in 0..1 (below 1)",
                   "e.g. --adam-betas 0.9,0.999")
    if cfg.out is None:
        raise _bad("--out is required", "give the folder for the healed model, e.g. --out healed/")
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise _bad(f"--lr {cfg.lr:g} must be a positive number", "the paper uses 1e-4")
    checks = [
        (cfg.seq_len >= 2, f"--seq-len {cfg.seq_len} must be at least 2"),
        (cfg.batch_size >= 1, f"--batch-size {cfg.batch_size} must be at least 1"),
        (cfg.grad_accum >= 1, f"--grad-accum {cfg.grad_accum} must be at least 1"),
        (cfg.max_steps is None or cfg.max_steps >= 1, f"--max-steps {cfg.max_steps} must be at least 1"),
        (cfg.max_tokens is None or cfg.max_tokens >= 1, f"--max-tokens {cfg.max_tokens} must be at least 1"),
        (cfg.max_time is None or (cfg.max_time > 0 and math.isfinite(cfg.max_time)),
         f"--max-time {cfg.max_time or 0:g} must be a positive number of seconds"),
        (cfg.weight_decay >= 0, f"--weight-decay {cfg.weight_decay:g} must not be negative"),
        (cfg.warmup_steps is None or cfg.warmup_steps >= 0, f"--warmup-steps {cfg.warmup_steps} is negative"),
        (0 <= cfg.min_lr_ratio <= 1, f"--min-lr-ratio {cfg.min_lr_ratio:g} must be within 0..1"),
        (cfg.max_grad_norm > 0, f"--max-grad-norm {cfg.max_grad_norm:g} must be positive"),
        (cfg.eval_every >= 0, f"--eval-every {cfg.eval_every} is negative"),
        (cfg.save_every >= 0, f"--save-every {cfg.save_every} is negative"),
        (cfg.keep_checkpoints >= 1, f"--keep-checkpoints {cfg.keep_checkpoints} must be at least 1"),
        (cfg.stop_after is None or cfg.stop_after >= 1, f"--stop-after {cfg.stop_after} must be at least 1"),
        (cfg.data.shuffle_window >= 1, f"--shuffle-window {cfg.data.shuffle_window} must be at least 1"),
        (0 <= cfg.data.eval_fraction < 0.5, f"--eval-fraction {cfg.data.eval_fraction:g} must be within 0..0.5"),
        (cfg.lora.r >= 1, f"--lora-r {cfg.lora.r} must be at least 1"),
        (cfg.lora.alpha > 0, f"--lora-alpha {cfg.lora.alpha} must be positive"),
        (0 <= cfg.lora.dropout < 1, f"--lora-dropout {cfg.lora.dropout:g} must be within 0..1"),
        (0 <= cfg.kd.alpha <= 1, f"--kd-alpha {cfg.kd.alpha:g} must be within 0..1"),
        (cfg.kd.temperature > 0, f"--kd-temperature {cfg.kd.temperature:g} must be positive"),
        (cfg.kd.hidden_weight >= 0, f"--kd-hidden-weight {cfg.kd.hidden_weight:g} must not be negative"),
        (cfg.kd.teacher_warmup_steps >= 0, f"--teacher-warmup-steps {cfg.kd.teacher_warmup_steps} is negative"),
        (cfg.kd.support is None or cfg.kd.support >= 1, f"--kd-support {cfg.kd.support} must be at least 1"),
        (cfg.kd.tail_samples is None or cfg.kd.tail_samples >= 0, f"--kd-tail-samples {cfg.kd.tail_samples} is negative"),
    ]
    for ok, message in checks:
        if not ok:
            raise _bad(message)
    if cfg.max_steps is not None and cfg.max_tokens is not None:
        raise _bad("give --max-steps or --max-tokens, not both")
    if cfg.data.shuffle_window > 1 and not cfg.data.streaming:
        raise _bad("--shuffle-window applies to --streaming (in memory every epoch is fully shuffled)")
    if cfg.data.streaming:
        if cfg.data.format == "instruction":
            raise _bad("--streaming reads plain text; instruction data is read into memory",
                       "drop --streaming for Alpaca files (they are small), or use --format text")
        if cfg.max_steps is None and cfg.max_tokens is None:
            raise _bad("--streaming needs --max-steps or --max-tokens (the length of a stream is unknown until "
                       "it is read)", "e.g. --max-tokens 50000000" + (" (an upper bound beside --max-time)"
                                                                     if cfg.max_time is not None else ""))
    if cfg.method != "lora" and cfg.lora.save_adapter:
        raise _bad("--save-adapter only applies to --method lora")
    if cfg.method != "kd" and cfg.kd.teacher is not None:
        raise _bad("--teacher only applies to --method kd")
    if cfg.kd.hidden is not None and cfg.kd.hidden not in HIDDEN_LOSSES:
        raise _bad(f"unknown --kd-hidden '{cfg.kd.hidden}'", f"use one of {', '.join(HIDDEN_LOSSES)}")
    if cfg.kd.teacher_dtype is not None and cfg.kd.teacher_dtype not in TEACHER_DTYPES:
        raise _bad(f"unknown --teacher-dtype '{cfg.kd.teacher_dtype}'", f"use one of {', '.join(TEACHER_DTYPES)}")
    if cfg.method != "kd" and (cfg.kd.hidden is not None or cfg.kd.teacher_warmup_steps
                               or cfg.kd.teacher_dtype is not None or cfg.kd.support is not None):
        what = ("--kd-hidden" if cfg.kd.hidden is not None else
                "--teacher-warmup-steps" if cfg.kd.teacher_warmup_steps else
                "--teacher-dtype" if cfg.kd.teacher_dtype is not None else "--kd-support")
        raise _bad(f"{what} only applies to --method kd")
    if cfg.kd.tail_samples is not None and cfg.kd.support is None:
        raise _bad("--kd-tail-samples applies with --kd-support", "give --kd-support K too, e.g. --kd-support 64")
    if cfg.kd.support is not None and cfg.kd.temperature != 1:
        raise _bad(f"--kd-support estimates the KL at temperature 1, not --kd-temperature {cfg.kd.temperature:g}",
                   "drop one of the two")
    if cfg.optimizer_in_backward and cfg.grad_accum > 1:
        raise _bad("--optimizer-in-backward updates each parameter as soon as its gradient is complete; "
                   "--grad-accum keeps every gradient until the last micro-batch", "use one or the other")
    if cfg.optimizer_in_backward and cfg.mixed_precision == "fp16":
        raise _bad("--optimizer-in-backward cannot be used with fp16's loss scaling", "use --mixed-precision bf16")
    if cfg.method == "lora" and (cfg.train_blocks is not None or cfg.train_head):
        raise _bad("--train-blocks/--train-head choose what full-parameter training updates; LoRA trains adapters",
                   "use them with --method cpt or kd")
    if cfg.train_blocks is not None:
        from shortllm.training.freeze import check_spec

        check_spec(cfg.train_blocks)


def run_identity(cfg: TrainConfig, model_fingerprint: str, data_fingerprint: str, total_steps: int,
                 global_batch: int) -> dict[str, Any]:
    """The options that shape the training trajectory: a checkpoint only resumes a run with the same ones.

    Session-only options (where to write, how often to evaluate or save, when to stop this session) and the
    number of processes (for the same global batch) are not part of it.
    """
    return {
        "method": cfg.method,
        "model_fingerprint": model_fingerprint,
        "data_fingerprint": data_fingerprint,
        "seq_len": cfg.seq_len,
        "global_batch": global_batch,
        "total_steps": total_steps,
        "lr": cfg.lr, "weight_decay": cfg.weight_decay, "betas": list(cfg.betas),
        "warmup_steps": cfg.warmup_steps, "min_lr_ratio": cfg.min_lr_ratio, "max_grad_norm": cfg.max_grad_norm,
        **({"lr_schedule": cfg.lr_schedule} if cfg.lr_schedule != "cosine" else {}),  # older identities unchanged
        "lora": ({k: v for k, v in asdict(cfg.lora).items() if k != "save_adapter"}
                 if cfg.method == "lora" else None),
        "kd": _kd_identity(cfg) if cfg.method == "kd" else None,
        # only when set, so the checkpoints of runs without them keep their identity
        **({"train_blocks": cfg.train_blocks} if cfg.train_blocks is not None else {}),
        **({"train_head": True} if cfg.train_head else {}),
        **({"max_time": cfg.max_time} if cfg.max_time is not None else {}),  # its schedule follows the clock
        "seed": cfg.seed,
        "dtype": cfg.settings.dtype,
        "gradient_checkpointing": cfg.gradient_checkpointing,
        # only when set, so the checkpoints of runs without it keep their identity
        **({"keep_best": True} if cfg.keep_best else {}),
        **({"optimizer_in_backward": True} if cfg.optimizer_in_backward else {}),  # no clipping: other trajectory
    }


def _kd_identity(cfg: TrainConfig) -> dict[str, Any]:
    kd = asdict(cfg.kd)
    if kd["hidden"] is None:
        kd.pop("hidden")
        kd.pop("hidden_weight")
    if not kd["teacher_warmup_steps"]:
        kd.pop("teacher_warmup_steps")
    if kd["teacher_dtype"] is None:
        kd.pop("teacher_dtype")
    if kd["support"] is None:
        kd.pop("support")
        kd.pop("tail_samples")
    else:
        kd["tail_samples"] = cfg.kd.support_pair()[1]  # the default spelled out: the same run either way
    return kd


def identity_hash(identity: dict[str, Any]) -> str:
    """Short stable hash of a run identity."""
    blob = json.dumps(identity, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
