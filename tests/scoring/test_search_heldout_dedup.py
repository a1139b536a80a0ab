"""auto's held-out text shares no document with the scoring windows, copies included."""

from shortllm.scoring.search import heldout_documents


def test_copies_of_read_documents_and_of_each_other_are_dropped():
    docs = ["alpha beta", "gamma", "alpha  beta\n", "delta", "gamma", "", "delta", "epsilon"]
    rest = heldout_documents(docs, read={0, 1})
    assert rest == ["delta", "epsilon"]  # "alpha beta" and "gamma" were read; the second "delta" is a copy
