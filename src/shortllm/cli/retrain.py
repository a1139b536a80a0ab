"""``shortllm retrain``: heal a (pruned) model with LoRA, continued pretraining or distillation."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from shortllm.cli import applies
from shortllm.cli.options import (
    DataDirOpt,
    DeviceOpt,
    DtypeOpt,
    JsonOpt,
    ModelOpt,
    OutOpt,
    OverwriteOpt,
    RevisionOpt,
    SeedOpt,
    TextFieldOpt,
    KernelsOpt, TrustRemoteCodeOpt,
    early_checks,
    load_settings,
)
from shortllm.cli.help import in_group
from shortllm.cli.output import activity, console, duration, print_json, print_path, state

MethodOpt = Annotated[str, typer.Option(
    "--method", "-M", help="lora (peft adapter, r=8) | cpt (full-parameter continued pretraining) | "
    "kd (cpt plus distillation from the unpruned teacher).", show_default=False, rich_help_panel='Method and data')]
TrainDataOpt = Annotated[str, typer.Option(
    "--data", "-d", help="Training text: a named dataset (pydoc, wikitext2, c4, ...; name[:split]), "
    "hf:OWNER/NAME[/CONFIG][:SPLIT], a "
    ".txt/.jsonl/.json/.parquet file or folder, or an Alpaca .json/.jsonl of instruction/input/output records.", rich_help_panel='Method and data')]
FormatOpt = Annotated[str, typer.Option(
    "--format", help="auto (Alpaca records if the file has an 'instruction' field) | text | instruction.", rich_help_panel='Method and data')]
EvalDataOpt = Annotated[str | None, typer.Option(
    "--eval-data", help="Held-out data (default: the last --eval-fraction of --data).", show_default=False, rich_help_panel='Method and data')]
TrainSeqLenOpt = Annotated[int, typer.Option("--seq-len", help="Tokens per training row (packed text / truncation).", rich_help_panel='Method and data')]

# The run's estimated time is printed after ESTIMATE_AFTER_STEPS steps of a session, or as soon as two steps took
# ESTIMATE_AFTER_S seconds. Its seconds per step leave out the session's first step (allocations, lazy set-up:
# 38 s against 25 s for the next ones, measured with kd on the embedded model on a 2-core CPU).
ESTIMATE_AFTER_STEPS = 3
ESTIMATE_AFTER_S = 30.0


def retrain(
    ctx: typer.Context,
    method: MethodOpt,
    out: OutOpt = None,
    model: ModelOpt = None,
    data: TrainDataOpt = "pydoc:train",
    data_dir: in_group(DataDirOpt, "Method and data") = None,
    text_field: in_group(TextFieldOpt, "Method and data") = "text",
    data_format: FormatOpt = "auto",
    eval_data: EvalDataOpt = None,
    eval_fraction: Annotated[float, typer.Option("--eval-fraction", help="Share of rows held out.", rich_help_panel='Method and data')] = 0.05,
    max_eval_rows: Annotated[int | None, typer.Option(
        "--max-eval-rows", help="At most this many held-out rows (default: a tenth of the rows the run trains on, "
        "4 to 32).", show_default=False, rich_help_panel='Method and data')] = None,
    streaming: Annotated[bool, typer.Option(
        "--streaming", help="Read plain text lazily, in order (corpora larger than memory; hub datasets "
        "streamed whole). Needs --max-steps or --max-tokens; holds out the first --max-eval-rows blocks.", rich_help_panel='Method and data')] = False,
    shuffle_window: Annotated[int, typer.Option(
        "--shuffle-window", help="With --streaming: read this many blocks at a time and serve them in a seeded "
        "random order (memory: this many blocks; 1: corpus order).", rich_help_panel='Method and data')] = 1,
    seq_len: TrainSeqLenOpt = 256,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Rows per device per micro-step.", rich_help_panel='Optimisation')] = 4,
    grad_accum: Annotated[int, typer.Option("--grad-accum", help="Micro-steps per optimizer step.", rich_help_panel='Optimisation')] = 1,
    max_steps: Annotated[int | None, typer.Option(
        "--max-steps", help="Optimizer steps (default: one pass over the data).", show_default=False, rich_help_panel='Optimisation')] = None,
    max_tokens: Annotated[int | None, typer.Option(
        "--max-tokens", help="Or a budget in training tokens.", show_default=False, rich_help_panel='Optimisation')] = None,
    max_time: Annotated[str | None, typer.Option(
        "--max-time", help="Or a budget in training time: 600, 90s, 10m, 1.5h (loading, teacher correction, "
        "the first and last held-out loss and the save not counted). The schedule follows the clock; "
        "--max-steps / --max-tokens / one pass over the data is then an upper bound.", show_default=False, rich_help_panel='Optimisation')] = None,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate (AdamW).", rich_help_panel='Optimisation')] = 1e-4,
    adam_betas: Annotated[str, typer.Option(
        "--adam-betas", help="AdamW beta1,beta2 (HF Trainer's default, used by the LoRA reference: 0.9,0.999).", rich_help_panel='Optimisation')
    ] = "0.9,0.95",
    lr_schedule: Annotated[str, typer.Option(
        "--lr-schedule", help="After the warmup: cosine (down to lr x --min-lr-ratio) | linear (down to 0, "
        "HF Trainer's default).", rich_help_panel='Optimisation')] = "cosine",
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="AdamW weight decay (matrices).", rich_help_panel='Optimisation')] = 0.1,
    warmup_steps: Annotated[int | None, typer.Option(
        "--warmup-steps", help="Linear warmup steps (default: 5% of the steps, or of the progress with "
        "--max-time), then the --lr-schedule decay.",
        show_default=False, rich_help_panel='Optimisation')] = None,
    min_lr_ratio: Annotated[float, typer.Option("--min-lr-ratio", help="Cosine ends at lr x this.", rich_help_panel='Optimisation')] = 0.1,
    max_grad_norm: Annotated[float, typer.Option("--max-grad-norm", help="Gradient clipping norm.", rich_help_panel='Optimisation')] = 1.0,
    lora_r: Annotated[int, typer.Option("--lora-r", help="LoRA rank.", rich_help_panel='LoRA (--method lora)')] = 8,
    lora_alpha: Annotated[int, typer.Option("--lora-alpha", help="LoRA alpha.", rich_help_panel='LoRA (--method lora)')] = 16,
    lora_dropout: Annotated[float, typer.Option("--lora-dropout", help="LoRA dropout.", rich_help_panel='LoRA (--method lora)')] = 0.05,
    lora_targets: Annotated[str | None, typer.Option(
        "--lora-targets", help="Comma-separated module names (default: every attention and MLP projection).",
        show_default=False, rich_help_panel='LoRA (--method lora)')] = None,
    save_adapter: Annotated[bool, typer.Option(
        "--save-adapter", help="LoRA: save the adapter only (default: merge it into a full model).", rich_help_panel='LoRA (--method lora)')] = False,
    teacher: Annotated[str | None, typer.Option(
        "--teacher", help="KD teacher (default: the unpruned model named in the pruned folder's shortllm.json).",
        show_default=False, rich_help_panel='Distillation (--method kd)')] = None,
    kd_alpha: Annotated[float, typer.Option("--kd-alpha", help="KD weight: alpha*T^2*KL + (1-alpha)*CE; 1 = forward KL only, as Minitron.", rich_help_panel='Distillation (--method kd)')] = 1.0,
    kd_temperature: Annotated[float, typer.Option("--kd-temperature", help="KD softmax temperature T.", rich_help_panel='Distillation (--method kd)')] = 1.0,
    kd_hidden: Annotated[str | None, typer.Option(
        "--kd-hidden", help="kd: also match each kept block's output to its original block's output in the teacher "
        "(the mapping comes from the pruned folder's provenance): nmse (normalised MSE) | cosine.",
        show_default=False, rich_help_panel='Distillation (--method kd)')] = None,
    kd_hidden_weight: Annotated[float, typer.Option(
        "--kd-hidden-weight", help="Weight of the --kd-hidden term, added to the KD objective.", rich_help_panel='Distillation (--method kd)')] = 1.0,
    teacher_warmup_steps: Annotated[int, typer.Option(
        "--teacher-warmup-steps", help="kd: fine-tune the teacher on the healing data for N steps first "
        "(Minitron's teacher correction, for data unlike the teacher's own).", rich_help_panel='Distillation (--method kd)')] = 0,
    teacher_dtype: Annotated[str | None, typer.Option(
        "--teacher-dtype", help="kd: store the teacher's weights in bfloat16 | float16 | float32 (default: as "
        "--dtype); 16 bits halve its memory, and each module still computes in the loaded precision (its "
        "weights rounded once).", show_default=False, rich_help_panel='Distillation (--method kd)')] = None,
    kd_support: Annotated[int | None, typer.Option(
        "--kd-support", help="kd: estimate the KL (and CE) at the teacher's K most probable tokens plus "
        "--kd-tail-samples draws from the rest, instead of all of the vocabulary: the student's output head is "
        "never applied in full (faster steps where the head is a large share of the model: docs/retrain.md); "
        "temperature 1 only.",
        show_default=False, rich_help_panel='Distillation (--method kd)')] = None,
    kd_tail_samples: Annotated[int | None, typer.Option(
        "--kd-tail-samples", help="kd with --kd-support: draws from the teacher's distribution beyond its top "
        "K, each carrying an equal share of the remaining mass (0: renormalise the top K, as top-k KD). "
        "[default: 64]", show_default=False, rich_help_panel='Distillation (--method kd)')] = None,
    train_blocks: Annotated[str | None, typer.Option(
        "--train-blocks", help="cpt/kd: train only these blocks, freeze the rest: last:N | first:N | "
        "around-cuts:N | from-cut:N | 3,7,10-12 | all. kd without --train-head: the teacher skips the "
        "frozen leading blocks (takes their output from the student).", show_default=False, rich_help_panel='What to train (cpt, kd)')] = None,
    train_head: Annotated[bool, typer.Option(
        "--train-head", help="cpt/kd: also train the output head and final norm (alone: only them).", rich_help_panel='What to train (cpt, kd)')] = False,
    eval_every: Annotated[int, typer.Option("--eval-every", help="Held-out loss every N steps (0: at the end).", rich_help_panel='Checkpoints and evaluation')] = 50,
    save_every: Annotated[int, typer.Option("--save-every", help="Checkpoint every N steps (0: never).", rich_help_panel='Checkpoints and evaluation')] = 100,
    keep_checkpoints: Annotated[int, typer.Option("--keep-checkpoints", help="Newest checkpoints kept.", rich_help_panel='Checkpoints and evaluation')] = 2,
    checkpoint_dir: Annotated[Path | None, typer.Option(
        "--checkpoint-dir", help="Where checkpoints go (default: OUT.checkpoints beside --out).",
        show_default=False, rich_help_panel='Checkpoints and evaluation')] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the newest checkpoint of this run.", rich_help_panel='Checkpoints and evaluation')] = False,
    keep_best: Annotated[bool, typer.Option(
        "--keep-best", help="Save the weights of the lowest held-out loss (of the evaluations every --eval-every "
        "steps and at the end) to --out, as the reference's load_best_model_at_end; survives --resume.", rich_help_panel='Checkpoints and evaluation')] = False,
    stop_after: Annotated[int | None, typer.Option(
        "--stop-after", help="End this session after N steps with a checkpoint (continue later with --resume).",
        show_default=False, rich_help_panel='Checkpoints and evaluation')] = None,
    gradient_checkpointing: Annotated[bool, typer.Option(
        "--gradient-checkpointing", help="Recompute activations in backward (less memory, ~30% slower).", rich_help_panel='Memory and precision')] = False,
    optimizer_in_backward: Annotated[bool, typer.Option(
        "--optimizer-in-backward", help="Update each parameter as soon as its gradient is complete and free it "
        "(no gradients held: 4 bytes per float32 trained parameter less); no gradient clipping (--max-grad-norm "
        "is not applied), no --grad-accum, one process, no fp16.", rich_help_panel='Memory and precision')] = False,
    mixed_precision: Annotated[str, typer.Option(
        "--mixed-precision", help="auto (bf16 autocast on CUDA, none on CPU) | no | bf16 | fp16.", rich_help_panel='Memory and precision')] = "auto",
    seed: in_group(SeedOpt, "Optimisation") = 1234,
    dtype: DtypeOpt = "float32",
    device: DeviceOpt = "auto",
    trust_remote_code: TrustRemoteCodeOpt = False,
    kernels: KernelsOpt = False,
    revision: RevisionOpt = None,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Heal a model by retraining: LoRA, continued pretraining (CPT) or distillation (KD).

    Examples:

    \b
      shortllm retrain --method cpt -m pruned/ --data c4 --data-dir ../shared/data --max-steps 500 --out healed/
      shortllm retrain --method kd -m pruned/ --data pretrain/gutenberg_2600_war_and_peace.txt \\
          --data-dir ../shared/data --max-tokens 2000000 --out kd/
      shortllm retrain --method lora -m pruned/ --data alpaca/alpaca_data_1k.json --data-dir ../shared/data \\
          --seq-len 256 --out lora/
      shortllm retrain --method kd -m pruned/ --data c4 --data-dir ../shared/data --seq-len 128 \\
          --train-blocks all --kd-support 64 --max-time 10m --out kd-10min/

    Writes a plain Hugging Face checkpoint (LoRA merged unless --save-adapter), shortllm.json (method,
    data, tokens, steps, wall time, loss curve) and train_curve.png to --out. Checkpoints go to
    OUT.checkpoints every --save-every steps; --resume continues a stopped run. Runs the same under
    `torchrun --nproc_per_node N` or `accelerate launch` (see docs/distributed.md).
    """
    applies.check_given(ctx, applies.RETRAIN)
    from shortllm.training.config import DataOptions, KDOptions, LoraOptions, TrainConfig, validate

    targets = tuple(t.strip() for t in lora_targets.split(",") if t.strip()) if lora_targets else None
    cfg = TrainConfig(
        method=method, model=model, out=out,
        data=DataOptions(data=data, data_dir=data_dir, text_field=text_field, format=data_format,
                         eval_data=eval_data, eval_fraction=eval_fraction, max_eval_rows=max_eval_rows,
                         streaming=streaming, shuffle_window=shuffle_window),
        seq_len=seq_len, batch_size=batch_size, grad_accum=grad_accum, max_steps=max_steps, max_tokens=max_tokens,
        max_time=_seconds(max_time, "--max-time") if max_time is not None else None,
        lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps, min_lr_ratio=min_lr_ratio,
        max_grad_norm=max_grad_norm, betas=_betas(adam_betas), lr_schedule=lr_schedule,
        lora=LoraOptions(r=lora_r, alpha=lora_alpha, dropout=lora_dropout, targets=targets,
                         save_adapter=save_adapter),
        kd=KDOptions(teacher=teacher, alpha=kd_alpha, temperature=kd_temperature, hidden=kd_hidden,
                     hidden_weight=kd_hidden_weight, teacher_warmup_steps=teacher_warmup_steps,
                     teacher_dtype=teacher_dtype, support=kd_support, tail_samples=kd_tail_samples),
        train_blocks=train_blocks, train_head=train_head,
        eval_every=eval_every, save_every=save_every, keep_checkpoints=keep_checkpoints,
        checkpoint_dir=checkpoint_dir, resume=resume, stop_after=stop_after, keep_best=keep_best,
        gradient_checkpointing=gradient_checkpointing, optimizer_in_backward=optimizer_in_backward,
        mixed_precision=mixed_precision, seed=seed,
        settings=load_settings(dtype, device, None, trust_remote_code, revision, kernels), overwrite=overwrite,
        command=shlex.join(["shortllm", *sys.argv[1:]]),
    )
    validate(cfg)  # the option values, before torch and the training code are imported (seconds)
    # kd without --teacher reads its teacher from the pruned folder's manifest: a hub id, perhaps
    early_checks(cfg.settings, models=None if method == "kd" and teacher is None else
                 [model, *([teacher] if teacher else [])],
                 texts=[(spec, split, data_dir, text_field) for spec, split in ((data, "train"), (eval_data, "validation"))
                        if spec is not None])
    from shortllm.training.run import retrain as run_retrain

    # Ctrl-C comes out of run_retrain as errors.Interrupted naming the checkpoint kept (exit code 130).
    with _training_progress(f"Starting shortllm retrain --method {method}") as on_step:
        result = run_retrain(cfg, on_step=on_step)
    if not result.is_main:
        return
    if json_out:
        print_json(result.as_dict(curves=False))
        return
    _render(result, cfg)


def _betas(text: str) -> tuple[float, ...]:
    """``--adam-betas 0.9,0.999`` -> (0.9, 0.999); the core checks the count and the range."""
    from shortllm.errors import TrainingError

    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise TrainingError(f"--adam-betas '{text}' is not two numbers", "e.g. --adam-betas 0.9,0.999") from None


DURATION_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def _seconds(text: str, flag: str) -> float:
    """``600`` / ``90s`` / ``10m`` / ``1.5h`` -> seconds; the core checks the value is positive."""
    from shortllm.errors import TrainingError

    number = text.strip().lower().rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = text.strip().lower()[len(number):]
    try:
        return float(number) * DURATION_UNITS[unit]
    except (KeyError, ValueError):
        raise TrainingError(f"{flag} '{text}' is not a duration",
                            f"e.g. {flag} 600, {flag} 10m or {flag} 1.5h") from None


def _training_progress(description: str, quiet: bool = False):
    """The run's progress on stderr (cli/output.py: a bar on a terminal, plain lines otherwise) and, after the first
    steps, the estimated time of the whole run; yields the core's ``on_step`` callback (None when quiet)."""
    import contextlib

    @contextlib.contextmanager
    def run():
        if state["quiet"] or quiet:
            yield None
            return
        with activity(description) as act:
            estimated, first_step_s = False, None

            def on_step(step: int, total: int, s: dict) -> None:
                nonlocal estimated, first_step_s
                done, spent = s.get("session_steps") or 0, s.get("session_s") or 0.0
                if done == 1:
                    first_step_s = spent
                if done >= 2 and first_step_s is not None:
                    per_step = (spent - first_step_s) / (done - 1)
                else:
                    per_step = spent / done if done else None
                info = f"loss {s['loss']:.4f}, lr {s['lr']:.2e}, {s['tokens_per_s']:.0f} tok/s"
                if "time_left_s" in s:  # --max-time: the steps that fit at this pace, not the upper bound
                    total = min(total, step + int(s["time_left_s"] / per_step)) if per_step else total
                    info += f", {duration(s['time_left_s'])} left"
                act.update(step, total, name="Training", unit="step", info=info, seconds_per_item=per_step)
                if "eval_loss" in s:
                    act.note(f"step {step}/{total}: held-out loss {s['eval_loss']:.4f}")
                if (not estimated and first_step_s is not None and done >= 2 and per_step and step < total
                        and (done >= ESTIMATE_AFTER_STEPS or spent >= ESTIMATE_AFTER_S)):
                    estimated = True
                    act.note(estimate_line(per_step, step, total, done))

            yield on_step

    return run()


def estimate_line(seconds_per_step: float, step: int, total: int, measured_to: int) -> str:
    """The cost of the run from its measured speed: per step x total steps, and per step x steps still to run.

    E.g. ``Estimated training time: 46.1 s/step x 200 steps = 2h33m (2h31m left; measured over steps 2-3)``:
    steps 2 to ``measured_to`` of this session were timed.
    """
    return (f"Estimated training time: {seconds_per_step:.3g} s/step x {total} steps = "
            f"{duration(seconds_per_step * total)} ({duration(seconds_per_step * (total - step))} left; "
            f"measured over step{' 2' if measured_to == 2 else f's 2-{measured_to}'})")


def _final_train(r: dict) -> str:
    """The last step's training loss, named (a kd objective is a KL: its cross-entropy is shown beside it)."""
    objective = r.get("objective", "cross-entropy")
    if objective == "cross-entropy":
        return f"final train cross-entropy {r['final_loss']:.4f}"
    ce = f", train cross-entropy {r['final_ce']:.4f}" if r.get("final_ce") is not None else ""
    return f"final train objective ({objective}) {r['final_loss']:.4f}{ce}"


def _render(result, cfg) -> None:
    from shortllm.training.run import resume_command

    r = result.as_dict(curves=False)
    held = ""
    if r["initial_eval_loss"] is not None and r["final_eval_loss"] is not None:
        held = f"; held-out cross-entropy {r['initial_eval_loss']:.4f} -> {r['final_eval_loss']:.4f}"
    if r.get("best") and result.finished:
        held += (f"; kept the best weights: step {r['best']['step']}, held-out cross-entropy "
                 f"{r['best']['eval_loss']:.4f}")
    steps = (f"{r['steps']} steps (the --max-time limit of {duration(r['max_time_s'])})" if r["time_up"] else
             f"{r['steps']}/{r['total_steps']} steps")
    console.print(
        f"{r['method']}: {steps}, {r['tokens_seen']:,} tokens in "
        f"{r['wall_time_s']:.1f} s ({r['tokens_per_s'] or 0:.0f} tokens/s); {_final_train(r)}{held}"
    )
    if result.finished:
        print_path(f"Saved the healed {r['saved']} to ", r["out"])
    else:
        print_path("Stopped early; checkpoint ", r["checkpoint"], f". Continue with: {resume_command(cfg)}")
