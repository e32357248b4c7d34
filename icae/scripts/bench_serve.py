"""The server under load: N agents replaying trajectories concurrently for a fixed time, all on loopback.

    python -m icae.scripts.bench_serve --config_path icae/configs/serve_tiny.yaml [--clients 4 --seconds 60]

For each model type (ICAE as configured, then SimpleLLM on the same base with ``model_type=llm``), a server is started
as a subprocess on a free port; ``--clients`` threads each replay generated agent trajectories turn by turn (the
history up to each assistant turn, the recorded turn sent back as history, as an agent does), for ``--seconds``.
Reported: requests/s, median, 95th- and 99th-percentile latency, the server's peak memory (sampled RSS), prompt tokens,
decoder positions, tokens saved, the prefix-cache hit rate and the positions it served (from its /metrics), and the
mean running batch (decoded rows per decoding step). No figure is asserted anywhere: this is for reading.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from icae.benchmarks.measure import peak_rss
from icae.config import load_config, parse_overrides
from icae.data.corpus import stdlib_dir
from icae.data.generate_trajectories import generate
from icae.errors import UserError
from icae.scripts import entry
from icae.training.results import free_stem
from icae.utils.io import atomic_write_json, ensure_writable

ROOT = Path(__file__).resolve().parents[2]
# Read from the server's /metrics after the run (Prometheus names without the icae_ prefix).
SERVER_COUNTERS = ("prompt_tokens_total", "completion_tokens_total", "decoder_positions_total", "tokens_saved_total",
                   "slot_cache_hits_total", "observations_compressed_total", "prefilled_positions_total",
                   "batched_requests_total", "batches_total", "requests_total", "prefix_cache_hits_total",
                   "reused_positions_total", "decode_steps_total", "decode_rows_total")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def conversations(count: int, seed: int = 0) -> list[list[list[dict]]]:
    """Each trajectory as its requests: the messages up to each assistant turn (the turn itself is the answer)."""
    out = []
    for trajectory in generate([stdlib_dir() / "json", stdlib_dir() / "logging"], count, seed):
        messages = trajectory["messages"]
        out.append([messages[:i] for i, m in enumerate(messages) if m["role"] == "assistant" and i > 0])
    return out


def serve(config_path: str, overrides: list[str], port: int, flags: tuple[str, ...] = ()) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "icae.serve", "--config_path", config_path, *flags, f"port={port}",
                             *overrides], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def load(url: str, model: str, convs, clients: int, seconds: float, max_tokens: int) -> dict:
    import httpx

    latencies, errors, stop = [], [0], time.perf_counter() + seconds

    def agent(i: int) -> None:
        with httpx.Client(timeout=120) as http:
            j = i
            while time.perf_counter() < stop:
                for request in convs[j % len(convs)]:
                    if time.perf_counter() >= stop:
                        return
                    start = time.perf_counter()
                    r = http.post(f"{url}/v1/chat/completions", json={"model": model, "messages": request,
                                                                      "max_tokens": max_tokens, "temperature": 0})
                    if r.status_code == 200:
                        latencies.append(time.perf_counter() - start)
                    else:
                        errors[0] += 1
                j += clients

    threads = [threading.Thread(target=agent, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    latencies.sort()
    return {"requests": len(latencies), "errors": errors[0], "wall_seconds": wall,
            "requests_per_second": len(latencies) / wall,
            "latency_p50": statistics.median(latencies) if latencies else None,
            "latency_p95": latencies[int(0.95 * (len(latencies) - 1))] if latencies else None,
            "latency_p99": latencies[int(0.99 * (len(latencies) - 1))] if latencies else None}


def run_one(config_path: str, overrides: list[str], convs, args, flags: tuple[str, ...] = ()) -> dict:
    import httpx

    port = free_port()
    server = serve(config_path, overrides, port, flags)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                health = httpx.get(f"{url}/health", timeout=2).json()
                break
            except httpx.HTTPError:
                if server.poll() is not None:
                    raise RuntimeError(f"the server exited: {server.stderr.read()[-2000:]}")
                time.sleep(0.5)
        with peak_rss(server.pid, interval=0.05) as rss:  # the server's memory, not this client's
            measured = load(url, health["model"], convs, args.clients, args.seconds, args.max_tokens)
        metrics = dict(line.split(" ") for line in httpx.get(f"{url}/metrics").text.splitlines()
                       if line and not line.startswith("#"))
        return {**measured, "peak_rss_mib": rss["peak"] / 2**20, "model": health["model"],
                **{k: float(metrics[f"icae_{k}"]) for k in SERVER_COUNTERS}}
    finally:
        server.terminate()
        server.wait(timeout=30)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="icae bench-serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config_path", default=str(ROOT / "icae" / "configs" / "serve_tiny.yaml"))
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--max_tokens", type=int, default=16)
    parser.add_argument("--trajectories", type=int, default=16)
    parser.add_argument("--out", default="runs/bench_serve.json")
    parser.add_argument("--backends", nargs="+", choices=["torch", "llamacpp"], default=["torch"],
                        help="engines the ICAE server runs on, one server each (llamacpp: `make llamacpp`, and run "
                             "this with .engines/llamacpp/bin/python); SimpleLLM runs on torch")
    parser.add_argument("--weights", choices=["f32", "f16", "q8_0", "q4_k"], default=None,
                        help="--backends llamacpp: its weight type (default: the server's)")
    args, overrides = parser.parse_known_args(argv)
    problems = [f"--{name} must be >= 1, got {getattr(args, name)}" for name in ("clients", "max_tokens", "trajectories")
                if getattr(args, name) < 1] + ([f"--seconds must be > 0, got {args.seconds}"] if args.seconds <= 0 else [])
    if problems:
        raise UserError(f"{len(problems)} problem(s):\n  - " + "\n  - ".join(problems))
    llamacpp = ("--backend", "llamacpp") + (("--weights", args.weights) if args.weights else ())
    servers = {("icae" if backend == "torch" else f"icae ({backend})"): (overrides, () if backend == "torch" else llamacpp)
               for backend in args.backends}
    servers["llm"] = ([*overrides, "model_type=llm", "restore_from=null", "served_model_name=simple-llm"], ())
    for server_overrides, _ in servers.values():  # each server's config, checked here rather than in its subprocess
        load_config(args.config_path, parse_overrides(server_overrides))
    requested = Path(args.out)
    ensure_writable(requested.parent, "--out")
    convs = conversations(args.trajectories)
    results = {name: run_one(args.config_path, server_overrides, convs, args, flags)
               for name, (server_overrides, flags) in servers.items()}
    result = {"clients": args.clients, "seconds": args.seconds, "max_tokens": args.max_tokens, "backends": args.backends,
              "trajectories": args.trajectories, "results": results}
    out = requested.with_name(free_stem(requested.parent, requested.stem, (requested.suffix,)) + requested.suffix)
    atomic_write_json(out, result)
    print("| model | requests/s | p50 / p95 / p99 latency (s) | server peak RSS (MiB) | per request: prompt tokens "
          "/ decoder positions / prefilled / reused / completion tokens | prefix-cache hit rate | mean running batch |"
          "\n|---|---|---|---|---|---|---|")
    for name, r in results.items():
        n = max(r["requests"], 1)
        hits = r["prefix_cache_hits_total"] / max(r["requests_total"], 1)
        batch = r["decode_rows_total"] / max(r["decode_steps_total"], 1)
        print(f"| {name} | {r['requests_per_second']:.2f} | {r['latency_p50']:.3f} / {r['latency_p95']:.3f} / "
              f"{r['latency_p99']:.3f} | {r['peak_rss_mib']:.0f} | {r['prompt_tokens_total'] / n:.0f} / "
              f"{r['decoder_positions_total'] / n:.0f} / {r['prefilled_positions_total'] / n:.0f} / "
              f"{r['reused_positions_total'] / n:.0f} / {r['completion_tokens_total'] / n:.1f} | {hits:.2f} | "
              f"{batch:.2f} |")
    print(f"results: {out}" + (" (an earlier run's file is kept)" if out != requested else ""))
    return result


if __name__ == "__main__":
    entry(main)
