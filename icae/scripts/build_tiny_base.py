"""Train the tiny language model that ships as ``tiny-qwen2-lm`` (the CPU demo's frozen decoder).

    python -m icae.scripts.build_tiny_base [--seconds 420] [--out icae/assets/tiny-qwen2-lm]

A frozen decoder must be a trained language model: with a random one, an ICAE learns nothing (measured, see
FACTS). This script trains the tiny Qwen2 architecture (hidden 128, 2 layers, the shipped 4096-token BPE) as a
causal LM on the standard-library modules whose names start with a-m, for a fixed time budget on the CPU, and
writes an ordinary Hugging Face model directory (about 5 MB). Modules n-z are left unseen: the demo evaluates on them.
Deterministic for a seed up to the time budget (the number of steps done depends on the machine).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from icae.data.corpus import stdlib_dir
from icae.models.loading import tiny_config, tiny_tokenizer

ASSET_DIR = Path(__file__).resolve().parents[1] / "assets" / "tiny-qwen2-lm"


def base_lm_files(root: Path | None = None) -> list[Path]:
    """Top-level standard-library modules a-m: the base LM's training text."""
    root = root or stdlib_dir()
    return sorted(p for p in root.glob("*.py") if "a" <= p.name[0].lower() <= "m")


def token_blocks(tokenizer, files: list[Path], block: int) -> torch.Tensor:
    ids: list[int] = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id])
    n = len(ids) // block
    return torch.tensor(ids[: n * block]).view(n, block)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=420)
    parser.add_argument("--block", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ASSET_DIR)
    args = parser.parse_args()

    from transformers import AutoModelForCausalLM

    torch.manual_seed(args.seed)
    tok = tiny_tokenizer()
    data = token_blocks(tok, base_lm_files(), args.block)
    held = data[-64:]
    data = data[:-64]
    config = tiny_config(
        "qwen2", vocab_size=len(tok), eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        bos_token_id=None, initializer_range=0.02,
    )
    model = AutoModelForCausalLM.from_config(config)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.95))
    start, step = time.perf_counter(), 0
    gen = torch.Generator().manual_seed(args.seed)
    print(f"{data.shape[0]} blocks of {args.block} tokens; training for {args.seconds:.0f} s")
    while (elapsed := time.perf_counter() - start) < args.seconds:
        frac = elapsed / args.seconds  # cosine decay over the time budget, after a short warm-up
        lr = args.lr * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * frac))
        for group in opt.param_groups:
            group["lr"] = lr
        batch = data[torch.randint(0, data.shape[0], (args.batch,), generator=gen)]
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 100 == 0:
            print(f"step {step} loss {loss.item():.3f} lr {lr:.2e} {elapsed:.0f} s", flush=True)
    model.eval()
    with torch.no_grad():
        held_loss = model(input_ids=held, labels=held).loss.item()
    print(f"done: {step} steps, held-out loss {held_loss:.3f} (perplexity {math.exp(held_loss):.1f})")
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    tok.save_pretrained(args.out)
    (args.out / "TRAINING.md").write_text(
        f"Built by `python -m icae.scripts.build_tiny_base --seconds {args.seconds:.0f}`: {step} steps of "
        f"{args.batch}x{args.block} tokens on standard-library modules a-m; held-out perplexity "
        f"{math.exp(held_loss):.1f}.\n"
    )


if __name__ == "__main__":
    main()
