"""``icae serve``: an OpenAI-compatible server that compresses an agent's tool outputs as it runs.

``engine`` renders and decodes (caches, batching), ``app`` speaks HTTP, ``protocol`` is the wire format, ``caches``
and ``metrics`` are what they say. The entry point is :mod:`icae.scripts.serve`.
"""
