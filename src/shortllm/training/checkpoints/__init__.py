"""Checkpoint folders (save, find, resume, clean up), the state in them (model, optimizer, RNG as checksummed
safetensors + JSON, no pickles) and the weights of the best held-out loss (--keep-best)."""
