"""shortllm.data: corpora, local layouts, calibration sampling, packing."""
