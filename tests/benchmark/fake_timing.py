"""A stand-in for ``timed_generate`` with scripted timings, to test what bench does with them."""

from shortllm.benchmark.timing import RunTiming


def fake_generate(calls: list, load: list[float]):
    """Record the number of blocks of each model run into ``calls``; time the 4-block model as decoding
    in 1 s and any other in 0.8 s, prefill 0.1 s, all scaled by ``load[step]`` (step = pair of runs)."""
    def fake(model, ids, mask, new_tokens, pad, eos, meter):
        blocks = model.config.num_hidden_layers
        calls.append(blocks)
        step = (len(calls) - 1) // 2
        decode = (1.0 if blocks == 4 else 0.8) * load[step]
        return RunTiming(batch_size=int(ids.shape[0]), new_tokens=new_tokens, prefill_s=0.1 * load[step],
                         decode_s=decode, latency_s=decode + 0.1 * load[step], peak_memory_bytes=2**20), None
    return fake
