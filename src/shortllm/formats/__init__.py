"""File formats other than Hugging Face checkpoints: GGUF read helpers and the byte-copying GGUF writer."""
