"""``icae serve`` as a subprocess for the benchmark: started on a free loopback port, waited for, stopped after.

The server's config is checked here first (``load_config`` on the same file and overrides), so a bad config is one
message before anything starts; the server's own stderr goes to a file under the results directory, whose last
lines are quoted if it dies.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from icae.config import load_config, parse_overrides
from icae.errors import UserError

ROOT = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_config(serve: dict):
    """The config an ``icae serve`` of ``serve`` ({config, overrides}) would run with (its errors as UserError)."""
    return load_config(serve["config"], parse_overrides([str(o) for o in serve.get("overrides", [])]))


@contextmanager
def served(serve: dict, log: Path, timeout: float = 600):
    """Yield (base URL ``http://127.0.0.1:PORT/v1``, served model name) of an ``icae serve`` subprocess; it is
    stopped (SIGTERM, then SIGKILL after 30 s) when the block ends."""
    import httpx

    serve_config(serve)
    port = free_port()
    command = [sys.executable, "-m", "icae.serve", "--config_path", str(Path(serve["config"]).resolve()),
               "--host", "127.0.0.1", "--port", str(port), *[str(o) for o in serve.get("overrides", [])]]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as err:
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err, text=True)
        try:
            url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + timeout
            while True:
                try:
                    health = httpx.get(f"{url}/health", timeout=2).json()
                    break
                except httpx.HTTPError:
                    if process.poll() is not None:
                        tail = "\n".join(log.read_text().splitlines()[-15:])
                        raise UserError(f"icae serve {serve['config']} exited (code {process.returncode}) before it "
                                        f"answered; its last lines ({log}):\n{tail}") from None
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"icae serve {serve['config']} did not answer in {timeout:.0f} s ({log})")
                    time.sleep(0.5)
            yield f"{url}/v1", health["model"]
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
