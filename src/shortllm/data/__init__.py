"""Text corpora (built-in, local files, Hugging Face datasets), calibration windows and packed blocks.

Shared by ``score`` (calibration), ``eval`` (perplexity) and ``retrain`` (training text). See docs/data.md.
"""

from shortllm.data.corpora import KNOWN_DATASETS, Corpus, data_dir, load_documents
from shortllm.data.sampling import calibration_windows, pack_documents

__all__ = ["KNOWN_DATASETS", "Corpus", "calibration_windows", "data_dir", "load_documents", "pack_documents"]
