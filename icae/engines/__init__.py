"""Inference engines other than PyTorch: the same compressor served by llama.cpp (CPU, quantized) or vLLM (GPUs).

- ``gguf_export``: a checkpoint -> GGUF files (the base model, both LoRA adapters), the memory-token embeddings beside
  them and a manifest (``icae export --format gguf``).
- ``llamacpp``: the encoder and decoder passes in llama.cpp through llama-cpp-python's low-level API
  (``ICAE.from_pretrained(dir, backend="llamacpp")``).
- ``vllm``: the decoder served by vLLM from prompt embeddings, the compressor as a batched service.

Each engine's package is optional (``make llamacpp``; vLLM needs a GPU): importing this package needs neither.
"""
