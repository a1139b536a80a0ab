"""Text corpora (built-in, local files, Hugging Face datasets), calibration windows and packed blocks.

Shared by ``score`` (calibration), ``eval`` (perplexity) and ``retrain`` (training text). See docs/data.md.
"""

from shortllm.data.corpora import KNOWN_DATASETS, Corpus, DocumentStream, data_dir, load_documents, stream_documents
from shortllm.data.sampling import StreamPosition, calibration_windows, iter_blocks, pack_documents

__all__ = ["KNOWN_DATASETS", "Corpus", "DocumentStream", "StreamPosition", "calibration_windows", "data_dir",
           "iter_blocks", "load_documents", "pack_documents", "stream_documents"]
