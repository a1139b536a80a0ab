"""Forward passes of the training loop without full-vocabulary logits, and the block outputs hidden-state
distillation compares.

The model is called through its (possibly DDP-wrapped) forward with ``logits_to_keep`` an empty index tensor
(transformers' own "no logits" path) and ``output_hidden_states``; the last hidden state goes to
:func:`shortllm.training.objectives.losses.chunked_token_sums` with the model's output head (:mod:`shortllm.training.objectives.head`),
checked once against the model's real logits on a few tokens; where it differs (an unknown head) or the
weights are sharded (FSDP, ZeRO-3: the head cannot be called outside the wrapped forward) the loop keeps the
full-logits path.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from shortllm.training.objectives.head import Head, check_head, check_head_at, no_logits, output_head

log = logging.getLogger(__name__)


class BlockTap:
    """Forward hooks that keep chosen blocks' outputs while :meth:`capture` is open (not during recomputation
    by gradient checkpointing, which runs after it closes)."""

    def __init__(self, model: Any, blocks: list[int]):
        from shortllm.models.arch import blocks_of

        layers = blocks_of(model).layers
        self.outputs: dict[int, torch.Tensor] = {}
        self._active = False
        self._handles = [layers[i].register_forward_hook(self._hook(i)) for i in sorted(set(blocks))]

    def _hook(self, index: int):
        def hook(_module, _args, output):
            if self._active:
                self.outputs[index] = output[0] if isinstance(output, (tuple, list)) else output
        return hook

    @contextmanager
    def capture(self) -> Iterator[dict[int, torch.Tensor]]:
        self.outputs = {}
        self._active = True
        try:
            yield self.outputs
        finally:
            self._active = False

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def matched_blocks(student_config: Any, teacher_config: Any) -> list[tuple[int, int]]:
    """``(student block, teacher block)`` pairs of the same original block, from the provenance pruning
    records (``config.shortllm.kept_blocks``, new index -> original index) on both sides.

    Raises:
        TrainingError: the student records no provenance (and is not as deep as the teacher), the two descend
            from models of different depths, or no block is shared.
    """
    from shortllm.errors import TrainingError
    from shortllm.models.arch import num_layers
    from shortllm.models.config_rewrite import original_indices

    n_s, n_t = num_layers(student_config), num_layers(teacher_config)
    meta_s = getattr(student_config, "shortllm", None)
    meta_t = getattr(teacher_config, "shortllm", None)
    hint = "distil hidden states from the model the student was pruned from (its shortllm.json names it)"
    if not isinstance(meta_s, dict) and n_s != n_t:
        raise TrainingError(f"--kd-hidden needs to know which teacher block each student block came from, and the "
                            f"student ({n_s} blocks) records no provenance (config.shortllm) against a teacher of "
                            f"{n_t}", "use a folder written by shortllm prune")
    depth_s = meta_s.get("original_num_blocks", n_s) if isinstance(meta_s, dict) else n_s
    depth_t = meta_t.get("original_num_blocks", n_t) if isinstance(meta_t, dict) else n_t
    if depth_s != depth_t:
        raise TrainingError(f"--kd-hidden: the student descends from a {depth_s}-block model, the teacher from a "
                            f"{depth_t}-block one", hint)
    teacher_at = {orig: j for j, orig in enumerate(original_indices(teacher_config, n_t))}
    pairs = [(i, teacher_at[orig]) for i, orig in enumerate(original_indices(student_config, n_s))
             if orig in teacher_at]
    if not pairs:
        raise TrainingError("--kd-hidden: the student and the teacher share no block", hint)
    return pairs


@dataclass
class LossSetup:
    """How :func:`micro_losses` computes a micro-batch's losses (built once by :func:`loss_setup`)."""

    head: Head | None = None  # None: full-logits path
    teacher_head: Head | None = None
    temperature: float = 1.0
    hidden: str | None = None  # --kd-hidden: nmse | cosine
    pairs: list[tuple[int, int]] | None = None  # (student block, teacher block)
    student_tap: BlockTap | None = None
    teacher_tap: BlockTap | None = None
    chunk_tokens: int | None = None  # positions per head chunk (None: losses.CHUNK_ELEMENTS / V)
    shared: int = 0  # leading blocks the teacher takes from the student (:func:`shared_prefix`)
    shared_tap: BlockTap | None = None  # the student's output of block ``shared - 1``
    teacher_template: Any = None  # the teacher's block output format, for ``bypass``
    shared_checked: bool = False  # the first teacher forward ran whole and matched the student's prefix
    support: tuple[int, int] | None = None  # --kd-support k, --kd-tail-samples m (losses.support_sums)

    @property
    def chunked(self) -> bool:
        return self.head is not None


def loss_setup(accelerator: Any, model: Any, teacher: Any | None, temperature: float = 1.0,
               hidden: str | None = None, checkpointed: bool = False,
               support: tuple[int, int] | None = None) -> LossSetup:
    """Decide the loss path of a run (chunked head where it reproduces the logits) and set up the taps of
    ``--kd-hidden``. ``checkpointed`` (``--gradient-checkpointing``): the head runs in the smaller,
    recomputed chunks of ``losses.CHECKPOINTED_CHUNK_ELEMENTS``. ``support`` ``(k, m)`` (``--kd-support``):
    the KL and CE are estimated at the teacher's ``k`` most probable tokens and ``m`` draws
    (:func:`shortllm.training.objectives.losses.support_sums`).

    Raises:
        TrainingError: as :func:`matched_blocks`; ``support`` where the student's head cannot be applied to
            chosen tokens apart from the model (FSDP/ZeRO-3 sharding, a head the chunked path does not
            reproduce, an adapter on the head).
    """
    from accelerate.utils import DistributedType

    unwrapped = accelerator.unwrap_model(model)
    setup = LossSetup(temperature=temperature, hidden=hidden)
    sharded = accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    device = accelerator.device
    if not sharded:
        head = output_head(unwrapped)
        teacher_head = output_head(teacher) if teacher is not None else None
        if check_head(unwrapped, head, device) and (teacher is None or check_head(teacher, teacher_head, device)):
            setup.head, setup.teacher_head = head, teacher_head
            if checkpointed:
                from shortllm.training.objectives.losses import CHECKPOINTED_CHUNK_ELEMENTS

                setup.chunk_tokens = max(16, CHECKPOINTED_CHUNK_ELEMENTS // head.vocab_size)
        else:
            log.info("the output head cannot be applied apart from the model: losses use full logits")
    if support is not None and teacher is not None:
        if setup.head is None or not check_head_at(setup.head, device):
            from shortllm.errors import TrainingError

            raise TrainingError("--kd-support needs the student's output head applied apart from the model, "
                                "row by row; this run cannot (sharded weights, or a head with an adapter or "
                                "an unknown transform)", "drop --kd-support: the KL then uses every token")
        setup.support = support
    if teacher is not None and not sharded and not hidden:
        from shortllm.scoring.capture import block_template

        setup.shared = shared_prefix(unwrapped, teacher)
        if setup.shared:
            setup.shared_tap = BlockTap(unwrapped, [setup.shared - 1])
            setup.teacher_template = block_template(teacher)
            log.info("the first %d blocks are frozen and equal in the student and the teacher: the teacher "
                     "continues from the student's hidden state after them", setup.shared)
    if hidden and teacher is not None:
        setup.pairs = matched_blocks(unwrapped.config, teacher.config)
        setup.student_tap = BlockTap(unwrapped, [i for i, _ in setup.pairs])
        setup.teacher_tap = BlockTap(teacher, [j for _, j in setup.pairs])
    return setup


def micro_losses(model: Any, teacher: Any | None, setup: LossSetup, batch: dict[str, Any], autocast: Any,
                 with_teacher: bool, with_hidden: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(CE sum, KL sum, hidden-state loss sum, predicted-token count) of one micro-batch.

    Args:
        model: the (prepared) student; ``teacher`` the frozen teacher.
        batch: ``input_ids``, ``labels`` (IGNORE where nothing is predicted), optional ``attention_mask``.
        autocast: ``accelerator.autocast`` (the teacher and the chunked head run under it, as the student's
            prepared forward does).
        with_teacher: compute the KL term; ``with_hidden``: the hidden-state term (both need the teacher).
    """
    from shortllm.training.objectives.losses import IGNORE, ce_sum, chunked_token_sums, hidden_sum, kd_sum

    labels = batch["labels"]
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch.get("attention_mask"), "use_cache": False}
    extra = {"output_hidden_states": True, "logits_to_keep": no_logits(labels.device)} if setup.chunked else {}
    keep = labels[:, 1:] != IGNORE
    use_teacher = teacher is not None and (with_teacher or with_hidden)
    s_tap = setup.student_tap if with_hidden else setup.shared_tap if use_teacher else None
    with s_tap.capture() if s_tap else _nothing():
        out = model(**inputs, **extra)
    t_out = None
    if use_teacher:
        t_tap = setup.teacher_tap if with_hidden else None
        if setup.shared and not setup.shared_checked:
            t_out = _check_shared(teacher, setup, inputs, extra, autocast)
        else:
            with torch.no_grad(), autocast(), t_tap.capture() if t_tap else _nothing(), \
                    _from_student(teacher, setup):
                t_out = teacher(**inputs, **extra)
    zero = torch.zeros((), device=labels.device)
    if setup.chunked:
        hs, targets = out.hidden_states[-1][:, :-1][keep], labels[:, 1:][keep]
        ht = t_out.hidden_states[-1][:, :-1][keep] if with_teacher and t_out is not None else None
        with autocast():
            ce, kl = chunked_token_sums(hs, targets, setup.head, ht, setup.teacher_head, setup.temperature,
                                        setup.chunk_tokens, setup.support)
        count = keep.sum()
    else:
        ce, count = ce_sum(out.logits, labels)
        kl = (kd_sum(out.logits, t_out.logits, labels, setup.temperature)
              if with_teacher and t_out is not None else zero)
    hid = zero
    if with_hidden and setup.pairs:
        s_states = [s_tap.outputs[i][:, :-1][keep] for i, _ in setup.pairs]
        t_states = [setup.teacher_tap.outputs[j][:, :-1][keep] for _, j in setup.pairs]
        hid = hidden_sum(s_states, t_states, setup.hidden or "nmse")
        s_tap.outputs.clear()
        setup.teacher_tap.outputs.clear()
    return ce, kl, hid, count


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


def _from_student(teacher: Any, setup: LossSetup):
    """Context: the teacher's blocks ``0..shared-1`` are bypassed, the last of them returning the student's
    output of the same block (captured by ``setup.shared_tap`` in this micro-batch's student forward)."""
    if not setup.shared or setup.shared_tap is None or not setup.shared_tap.outputs:
        return _nothing()
    from shortllm.scoring.capture import bypass

    hidden = setup.shared_tap.outputs[setup.shared - 1].detach()
    return bypass(teacher, inject=(setup.shared - 1, hidden), template=setup.teacher_template)


def _check_shared(teacher: Any, setup: LossSetup, inputs: dict[str, Any], extra: dict[str, Any],
                  autocast: Any) -> Any:
    """The first teacher forward of a run with a shared prefix runs the teacher whole and compares its output
    of block ``shared - 1`` with the student's, bit for bit; where they differ (randomness or kernels that
    depend on train mode: MoE routing jitter, hybrid SSM training kernels) sharing is switched off for the run.
    Returns the teacher's output (correct either way)."""
    setup.shared_checked = True
    tap = BlockTap(teacher, [setup.shared - 1])
    try:
        with torch.no_grad(), autocast(), tap.capture():
            t_out = teacher(**inputs, **extra)
    finally:
        tap.remove()
    mine = setup.shared_tap.outputs.get(setup.shared - 1) if setup.shared_tap is not None else None
    theirs = tap.outputs.get(setup.shared - 1)
    if mine is None or theirs is None or not _equal(mine.detach(), theirs):
        log.info("the student's first %d blocks do not reproduce the teacher's output bit for bit in training: "
                 "the teacher runs whole", setup.shared)
        setup.shared = 0
        if setup.shared_tap is not None:
            setup.shared_tap.remove()
        setup.shared_tap = None
    return t_out


_TRAIN_NOISE_KEYS = ("dropout", "pdrop", "jitter", "noise")  # config keys of randomness only train mode applies


def _train_mode_noise(model: Any, modules: list[Any]) -> bool:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    for key, value in vars(config).items():
        if any(k in key for k in _TRAIN_NOISE_KEYS) and isinstance(value, (int, float)) \
                and not isinstance(value, bool) and value > 0:
            return True
    return any(isinstance(m, torch.nn.Dropout) and m.p > 0 for mod in modules for m in mod.modules())


def _same_weights(a: Any, b: Any) -> bool:
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    ba, bb = dict(a.named_buffers()), dict(b.named_buffers())
    if pa.keys() != pb.keys() or ba.keys() != bb.keys():
        return False
    return all(_equal(pa[k], pb[k]) for k in pa) and all(_equal(ba[k], bb[k]) for k in ba)


def _equal(x: torch.Tensor, y: torch.Tensor) -> bool:
    return x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y.to(x.device))


def shared_prefix(model: Any, teacher: Any) -> int:
    """How many leading blocks the kd teacher can take from the student instead of computing them: ``k`` such
    that the student's blocks ``0..k-1`` descend from the teacher's blocks ``0..k-1`` (pruning provenance),
    hold bit-identical weights (same values and dtype: a teacher stored in 16 bits shares nothing unless the
    student is in the same dtype), and are frozen, and every trainable parameter lies in a later block (so the
    embeddings and, when tied, the head are frozen too: ``--train-blocks`` without ``--train-head``). Then the
    teacher's hidden state after block ``k-1`` equals the student's, and the teacher runs only its blocks from
    ``k`` on. 0 when any condition fails, or when dropout, router jitter or noise is configured anywhere (the
    student trains in train mode, the teacher runs in eval). The first teacher forward of the run checks the
    equality on real data and switches sharing off where it does not hold (:func:`_check_shared`).

    Args:
        model: the unwrapped student; ``teacher``: the frozen teacher (after any warm-up, as it is stored).

    Returns:
        ``k >= 0`` (0: the teacher runs whole).
    """
    from shortllm.models.arch import blocks_of
    from shortllm.models.config_rewrite import original_indices

    try:
        s_layers, t_layers = blocks_of(model).layers, blocks_of(teacher).layers
        s_orig = original_indices(model.config, len(s_layers))
        t_orig = original_indices(teacher.config, len(t_layers))
    except Exception as err:  # an architecture the block table does not know: no sharing, nothing else changes
        log.debug("no shared teacher prefix: %s", err)
        return 0
    k = 0
    while k < min(len(s_layers), len(t_layers)) and s_orig[k] == t_orig[k] == k:
        k += 1
    k = min(k, next((i for i, layer in enumerate(s_layers) if any(p.requires_grad for p in layer.parameters())),
                    len(s_layers)))
    later = {id(p) for layer in s_layers[k:] for p in layer.parameters()}
    if k == 0 or any(p.requires_grad and id(p) not in later for p in model.parameters()):
        return 0
    # everything outside the blocks (embeddings, positions, final norm, head) as the teacher's, by name
    in_blocks = {id(t) for t in [*s_layers.parameters(), *s_layers.buffers()]}
    t_named = {**dict(teacher.named_parameters()), **dict(teacher.named_buffers())}
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        other = t_named.get(name)
        if id(tensor) not in in_blocks and (other is None or not _equal(tensor, other)):
            return 0
    if _train_mode_noise(model, [model.get_input_embeddings(), *s_layers[:k]]):
        return 0
    # the longest prefix of identical blocks (a warmed-up or 16-bit teacher differs everywhere: 0)
    return next((i for i in range(k) if not _same_weights(s_layers[i], t_layers[i])), k)

