"""``make agent-check``: mini-swe-agent 2.x against a live ``icae serve``, 10 steps in each of its modes.

    make agent-check            (or: python -m tests.agents.agent_check, once .agents/mini-swe-agent exists)

The server runs here (this project's environment) with a stand-in agent model (tests/serve/toolmodel.py: a tiny Qwen2
overfit to answer every turn with a ``bash`` tool call when tools are offered and with a fenced command otherwise; the
tiny models are untrained for agent work), compressing observations with an ICAE over it. mini-swe-agent runs in its
own environment (.agents/mini-swe-agent: litellm's pins are its own) with an environment class that returns saved
tool outputs and executes nothing (tests/agents/run_mini.py). Checked: every step got a parsed action (no format
error), the agent stopped at its step limit, observations were compressed (usage of every reply and /metrics).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import torch
import uvicorn

ROOT = Path(__file__).resolve().parents[2]
AGENT_PYTHON = ROOT / ".agents" / "mini-swe-agent" / "bin" / "python"
STEPS = 10


def saved_outputs() -> list[str]:
    """Tool outputs as a shell prints them (a listing, grep hits, a traceback, test results), 70-130 tokens each."""
    listing = "total 48\n" + "\n".join(f"-rw-r--r-- 1 agent agent {1000 + 37 * i:5d} Nov 30 12:{i:02d} src/mod_{i}.py"
                                       for i in range(3))
    grep = "\n".join(f"src/mod_{i}.py:{10 + 3 * i}:    def handle_{i}(self, request):" for i in range(4))
    trace = ("Traceback (most recent call last):\n" + "".join(
        f'  File "/repo/src/mod_{i}.py", line {20 + i}, in handle_{i}\n    return self.next(request)\n'
        for i in range(2)) + "ValueError: request 17 has no route")
    tests = "\n".join(f"tests/test_mod_{i}.py::test_handle_{i} {'PASSED' if i % 3 else 'FAILED'}" for i in range(5))
    return [listing, grep, trace, tests]


def start_server(model_dir: Path):
    from icae.config import load_config
    from icae.models import build_model
    from icae.serve.app import create_app
    from icae.serve.engine import Engine
    from tests.serve.test_server import free_port

    torch.manual_seed(0)
    config = load_config(None, {
        "model_name_or_path": str(model_dir), "model_type": "icae", "fixed_mem_size": 4, "mean_compression_rate": 4,
        "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "min_tokens_to_compress": 16, "train": False,
        "use_position_identifiers": True, "model_max_length": 4096, "torch_threads": 1,
        "compress_user_min_tokens": 64})
    torch.set_num_threads(1)
    model = build_model(config).eval()
    s = config.serve
    engine = Engine(model, config, s.max_batch_size, s.slot_cache_mb, s.max_conversations, s.default_max_tokens)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(engine, "stand-in-agent"), host="127.0.0.1", port=port,
                                           log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        thread.join(0.05)
    return server, thread, f"http://127.0.0.1:{port}"


def metrics(url: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics").text
    return {k: float(v) for k, v in (line.split(" ") for line in text.splitlines() if line and line[0] != "#")}


def check(mode: str, run: dict, before: dict, after: dict) -> list[str]:
    problems = []
    if run["steps"] != STEPS or run["exit_status"] != "LimitsExceeded":
        problems.append(f"{run['steps']} steps, exit status {run['exit_status']} (expected {STEPS}, LimitsExceeded)")
    if run["format_errors"] or any(len(a) != 1 for a in run["actions"]):
        problems.append(f"{run['format_errors']} format errors; actions per step {[len(a) for a in run['actions']]}")
    if len(run["executed"]) != STEPS:
        problems.append(f"{len(run['executed'])} actions reached the (saved-output) environment, expected {STEPS}")
    expected_role = "tool" if mode == "tools" else "user"
    if run["observation_roles"] != [expected_role] and run["observation_roles"] != sorted({"user", expected_role}):
        problems.append(f"observations were sent as {run['observation_roles']}")
    saved = [(u or {}).get("compression", {}).get("tokens_saved", 0) for u in run["usage"]]
    if not all(s > 0 for s in saved[1:]):  # every request after the first carries at least one observation
        problems.append(f"tokens saved per step {saved}: some observations were not compressed")
    counted = ("icae_observations_compressed_total", "icae_slot_cache_hits_total")  # compressed now, or seen before
    if sum(after[k] - before[k] for k in counted) <= 0:
        problems.append("/metrics counted no compressed observation")
    if run.get("format_error_replies"):
        problems.append(f"replies that did not parse: {run['format_error_replies']}")
    return problems


def main() -> int:
    from tests.serve.toolmodel import train

    if not AGENT_PYTHON.is_file():
        print(f"agent-check: no agent environment at {AGENT_PYTHON}; run `make agent-check`", file=sys.stderr)
        return 2
    began = time.perf_counter()
    asset = ROOT / "tests" / "serve" / "assets" / "standin"
    model_dir = asset if (asset / "standin.json").is_file() else train(Path(tempfile.mkdtemp()) / "standin", "both", 400)
    server, thread, url = start_server(model_dir)
    failures, rows = [], []
    try:
        with tempfile.TemporaryDirectory() as work:
            outputs = Path(work) / "outputs.json"
            outputs.write_text(json.dumps(saved_outputs()))
            for mode in ("tools", "text"):
                before, started = metrics(url), time.perf_counter()
                out = subprocess.run([str(AGENT_PYTHON), str(ROOT / "tests" / "agents" / "run_mini.py"), "--mode", mode,
                                      "--url", url, "--model", "stand-in-agent", "--outputs", str(outputs),
                                      "--steps", str(STEPS)], capture_output=True, text=True, timeout=1800)
                seconds, after = time.perf_counter() - started, metrics(url)
                if out.returncode != 0 or not out.stdout.strip():
                    failures.append(f"{mode}: the agent failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
                    continue
                run = json.loads(out.stdout.strip().splitlines()[-1])
                failures += [f"{mode}: {p}" for p in check(mode, run, before, after)]
                saved = after["icae_tokens_saved_total"] - before["icae_tokens_saved_total"]
                observations = sum(after[k] - before[k] for k in ("icae_observations_compressed_total",
                                                                  "icae_slot_cache_hits_total"))
                rows.append(f"| {mode:5s} | {run['steps']:5d} | {sum(len(a) == 1 for a in run['actions']):14d} | "
                            f"{run['format_errors']:13d} | {int(observations):12d} | {int(saved):12d} | "
                            f"{seconds:7.1f} |")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    print("| mode  | steps | parsed actions | format errors | observations compressed (new + slot-cache hits) | tokens saved | seconds |")
    print("|-------|-------|----------------|---------------|--------------|--------------|---------|")
    print("\n".join(rows))
    print(f"agent-check: {'FAILED' if failures else 'passed'} in {time.perf_counter() - began:.0f} s")
    for f in failures:
        print(f"  - {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
