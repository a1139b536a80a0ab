"""Alpaca rows are tokenized as one text with the tokenizer's own special tokens and masked by the prompt's length.

Two tokenizer kinds, built in-process with the ``tokenizers`` library (no download): a SentencePiece-like one
(Metaspace pre-tokenizer, BPE, BOS added through the tokenizer) and a Llama-3-like ByteLevel BPE whose BOS comes
from a ``TemplateProcessing`` post-processor (its ``add_bos_token`` reads False).
"""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from shortllm.training.data.rows import IGNORE, format_prompt, instruction_rows

RECORDS = [
    {"instruction": "Say hello to the team.", "input": "", "output": "Hello team, good morning!"},
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "Five."},
]
CORPUS = [format_prompt(r) + r["output"] for r in RECORDS] * 4


def _wrap(tok: Tokenizer, bos: str, eos: str) -> PreTrainedTokenizerFast:
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                       special_tokens=[(bos, tok.token_to_id(bos))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, unk_token="<unk>")


@pytest.fixture(scope="module")
def sentencepiece_like() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>", "<s>", "</s>"]))
    return _wrap(tok, "<s>", "</s>")


@pytest.fixture(scope="module")
def llama3_like() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<unk>", "<|begin_of_text|>", "<|end_of_text|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return _wrap(tok, "<|begin_of_text|>", "<|end_of_text|>")


@pytest.mark.parametrize("kind", ["sentencepiece_like", "llama3_like"])
def test_rows_are_the_whole_text_tokenized_once_with_bos_and_eos(kind, request):
    tok = request.getfixturevalue(kind)
    rows, dropped = instruction_rows(tok, RECORDS, seq_len=512)
    assert dropped == 0
    for record, ids, labels in zip(RECORDS, rows.input_ids, rows.labels):
        whole = tok(format_prompt(record) + record["output"])["input_ids"]
        assert whole[0] == tok.bos_token_id  # the tokenizer's own BOS, a post-processor's included
        assert ids.tolist() == whole + [tok.eos_token_id]
        n_prompt = len(tok(format_prompt(record))["input_ids"])
        assert labels.tolist() == [IGNORE] * n_prompt + ids.tolist()[n_prompt:]
        assert tok.decode(ids[n_prompt:-1]) == record["output"]


def test_the_llama3_like_tokenizer_adds_bos_only_through_its_post_processor(llama3_like):
    """The case the old code missed: add_bos_token reads False, yet the tokenizer's text starts with BOS."""
    assert not getattr(llama3_like, "add_bos_token", False)
    rows, _ = instruction_rows(llama3_like, RECORDS[:1], seq_len=512)
    assert rows.input_ids[0][0].item() == llama3_like.bos_token_id


def test_the_response_has_no_spurious_word_boundary_token(sentencepiece_like):
    """Tokenized alone, a SentencePiece response starts with a word-boundary piece: the row would read back with a
    space after "### Response:\\n". Tokenized with its prompt, the row reads back as exactly the text."""
    tok = sentencepiece_like
    record = RECORDS[0]
    alone = tok(record["output"], add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(alone[0]).startswith("▁")  # what separate tokenization produced
    rows, _ = instruction_rows(tok, [record], seq_len=512)
    text = tok.decode(rows.input_ids[0], skip_special_tokens=True)
    assert text == format_prompt(record) + record["output"]


def test_truncation_keeps_the_mask_and_drops_rows_without_response(sentencepiece_like):
    tok = sentencepiece_like
    n_prompt = len(tok(format_prompt(RECORDS[0]))["input_ids"])
    rows, dropped = instruction_rows(tok, RECORDS[:1], seq_len=n_prompt + 2)
    assert dropped == 0 and rows.labels[0].tolist()[:n_prompt] == [IGNORE] * n_prompt
    assert len(rows.input_ids[0]) == n_prompt + 2
    rows, dropped = instruction_rows(tok, RECORDS[:1], seq_len=n_prompt)
    assert (len(rows), dropped) == (0, 1)
