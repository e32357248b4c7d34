"""Benchmark code (the entry points are ``icae.scripts.bench`` and ``icae.scripts.bench_peers``): measuring time and
memory, the peers' environments, quality and speed of every method on the same inputs."""
