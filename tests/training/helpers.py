"""Small inputs for the training tests: a short text file, a pruned tiny model, quick options."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from shortllm.models.loading import LoadSettings
from shortllm.training.config import DataOptions, KDOptions, TrainConfig


def write_small_text(path: Path) -> Path:
    """About 40 KB of English (the first 12 pydoc topics), blank lines between documents."""
    from pydoc_data.topics import topics

    path.write_text("\n\n".join(topics[k] for k in sorted(topics)[:12]))
    return path


def make_tiny_model_with_tokenizer(path: Path, num_layers: int = 4, vocab: int = 512) -> Path:
    """A tiny random llama (tied embeddings) with its own small BPE tokenizer, trained here on pydoc text.

    A small vocabulary keeps the output layer, and so every training step, cheap on a CPU. Special tokens
    follow tests/tiny_models.py: <pad>=0, <s>=1 (BOS), </s>=2 (EOS).
    """
    from pydoc_data.topics import topics

    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    from tests.tiny_models import tiny_config

    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator([topics[k] for k in sorted(topics)[:20]], trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    config = tiny_config("llama", num_layers=num_layers)
    config.vocab_size = len(tok)
    config.tie_word_embeddings = True  # like the embedded SmolLM2: checkpoints must keep the tie
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def make_pruned(model_dir: Path, out: Path, blocks: list[int]) -> Path:
    """Prune ``blocks`` of ``model_dir`` into ``out`` with the prune job (so ``out`` has a shortllm.json)."""
    from shortllm.pruning.run import PruneRequest, prune

    prune(PruneRequest(model=str(model_dir), out=out, blocks=blocks, settings=LoadSettings(device="cpu")))
    return out


def quick_config(method: str, model: Path, data: Path, out: Path, **kw) -> TrainConfig:
    """A TrainConfig that trains a tiny model for a few steps on CPU in about a second."""
    data_kw = {k: kw.pop(k) for k in ("eval_fraction", "eval_data", "format", "max_eval_rows") if k in kw}
    if "teacher" in kw:
        kw["kd"] = KDOptions(teacher=kw.pop("teacher"))
    defaults = {"seq_len": 32, "batch_size": 2, "max_steps": 3, "eval_every": 0, "save_every": 0,
                "settings": LoadSettings(dtype="float32", device="cpu")}
    return TrainConfig(method=method, model=str(model), out=out,
                       data=DataOptions(data=str(data), **{"max_eval_rows": 2, **data_kw}), **{**defaults, **kw})


def torchrun(*args, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --nproc_per_node 2 ARGS`` (one thread per process) on a free port, so
    that tests running at the same time (pytest -n) do not meet on one rendezvous port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           *map(str, args)]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=timeout)
