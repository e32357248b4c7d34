"""Throughput of the vLLM backend against the PyTorch path on a GPU (scripts/device/vllm_check.sh runs it).

    python -m icae.benchmarks.engines_vllm --work /tmp/vllm_bench --requests 64 --context 2048 --new-tokens 64

An untrained ICAE over a randomly initialised Qwen2-0.5B-shaped model (the cost is real, the text is not), with
position identifiers off (the setting vLLM serves exactly) and a decoder adapter: ``--requests`` contexts compressed
by the PyTorch compressor, then answered (FT layout, ``--new-tokens`` each, no early stop) by PyTorch's batched
``generate`` and by vLLM from prompt embeddings. Reports generated tokens/s of each and their ratio, measured in the
same run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from icae.utils.io import atomic_write_json, replaceable


def main(argv: list[str] | None = None) -> dict:
    from icae.config import Config, ModelArguments
    from icae.engines.vllm import VllmICAE
    from icae.models import ICAE
    from icae.models.loading import load_base_model

    p = argparse.ArgumentParser(prog="python -m icae.benchmarks.engines_vllm", description=__doc__)
    p.add_argument("--work", required=True)
    p.add_argument("--shape", default="random-qwen2-0.5b")
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--context", type=int, default=2048)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--torch-batch", type=int, default=16)
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run's result.json in --work")
    a = p.parse_args(argv)
    work = Path(a.work)
    out = replaceable(work / "result.json", a.overwrite)  # refused before anything loads
    base, tok = load_base_model(a.shape)
    base.save_pretrained(work / "base")  # vLLM loads a model directory
    tok.save_pretrained(work / "base")
    margs = ModelArguments(model_name_or_path=str(work / "base"), fixed_mem_size=128, mean_compression_rate=4,
                           use_position_identifiers=False, freeze_decoder=False, lora_r=8, lora_alpha=16,
                           lora_dropout=0.0, train=False, model_max_length=8192)
    ICAE(margs, base, tok).save_pretrained(work / "ckpt", Config(model=margs))
    engine = VllmICAE(work / "ckpt", work / "engine", dtype="bfloat16", gpu_memory_utilization=0.5)
    torch_model = engine.model.to(torch.bfloat16)
    gen = torch.Generator().manual_seed(0)
    contexts = [torch.randint(8, 4096, (a.context,), generator=gen) for _ in range(a.requests)]
    prompts = [torch.randint(8, 4096, (16,), generator=gen) for _ in range(a.requests)]
    start = time.perf_counter()
    memory = engine.compress(contexts)
    torch.cuda.synchronize()
    compress_s = time.perf_counter() - start
    sampling = dict(max_new_tokens=a.new_tokens, stop_token_ids=[])
    engine.generate(memory.select([0]), [prompts[0]], **sampling)  # warm-up
    start = time.perf_counter()
    engine.generate(memory, prompts, **sampling)
    vllm_s = time.perf_counter() - start
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, a.requests, a.torch_batch):
            idx = list(range(i, min(i + a.torch_batch, a.requests)))
            torch_model.generate(memory.select(idx), [prompts[j] for j in idx], mode="ft", **sampling)
    torch.cuda.synchronize()
    torch_s = time.perf_counter() - start
    tokens = a.requests * a.new_tokens
    result = {"shape": a.shape, "requests": a.requests, "context": a.context, "new_tokens": a.new_tokens,
              "compress_s": compress_s, "vllm_tokens_per_s": tokens / vllm_s, "torch_tokens_per_s": tokens / torch_s,
              "vllm_over_torch": torch_s / vllm_s, "torch_batch": a.torch_batch, "gpu": torch.cuda.get_device_name()}
    atomic_write_json(out, result)
    print(result)
    return result


if __name__ == "__main__":
    from icae.errors import entry

    entry(main)
