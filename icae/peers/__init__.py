"""Workers that run in the peers' own environments (``make peers``), as subprocesses of ``icae.benchmarks``: never
imported by this package (each imports a peer library that is not installed here)."""
