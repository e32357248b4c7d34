"""Train a small language model as a frozen-decoder base (``tiny-qwen2-lm``, shipped; ``mini-qwen2-lm``, not shipped).

    python -m icae.scripts.build_tiny_base --preset tiny    # tiny-qwen2-lm: hidden 128, 2 layers (the shipped asset)
    python -m icae.scripts.build_tiny_base --preset mini    # icae/assets/mini-qwen2-lm: hidden 256, 4 layers, 5000
                                                            # steps (~80 min); not shipped: give its directory by path

A frozen decoder must be a trained language model: with a random one, an ICAE learns nothing on held-out text. This
script trains a Qwen2-architecture model with the shipped 4096-token BPE as a causal LM on Python standard-library
code, and writes an ordinary Hugging Face model directory with its training record (``TRAINING.md``,
``training_log.json`` and a loss-curve PNG).

What the LM reads (``icae.data.corpus.base_corpus_files``): the top-level modules a-m, and with ``--corpus wide`` also the standard library's
packages and its test suite. Never the top-level modules n-z (the compressor's pretraining text and the demo's held-out
modules), and never the packages that the RepoQA and trajectory builders draw their tasks from (``DOWNSTREAM``), nor
their tests. The held-out perplexity is measured on modules n-z, text the LM never saw.

Every record also says how well the base copies (``icae.metrics.copying``: a held-out span read again after 64, 512
and 1,024 tokens), at each evaluation (distance 64) and at the end: agents' actions are copies, and the shipped base
does not copy (docs/agent_env.md, "The edit is a copy the tiny base cannot make"). ``--repeats SHARE`` gives that
share of training rows a span of their first half written again further on (``--repeat_longest`` tokens at most),
text that rewards copying.

With ``--steps`` the run is deterministic for a seed on a given Python (the corpus is that interpreter's standard
library); ``--seconds`` instead trains for a time budget (the number of steps then depends on the machine).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import torch

from icae.data.corpus import base_corpus_files, top_level_modules
from icae.errors import entry
from icae.metrics.copying import copy_score
from icae.models.loading import tiny_config, tiny_tokenizer
from icae.training.record import ship
from icae.utils.io import atomic_write_json, atomic_write_text, temp_dir
from icae.utils.plotting import pyplot, save_png

ASSETS = Path(__file__).resolve().parents[1] / "assets"
PRESETS = {
    "tiny": dict(hidden=128, layers=2, intermediate=256, heads=4, corpus="narrow", seconds=480, steps=None, lr=3e-3,
                 out=ASSETS / "tiny-qwen2-lm"),
    "mini": dict(hidden=256, layers=4, intermediate=768, heads=4, corpus="wide", seconds=None, steps=5000, lr=2e-3,
                 out=ASSETS / "mini-qwen2-lm"),
}


def token_blocks(tokenizer, files: list[Path], block: int) -> torch.Tensor:
    """All files' tokens, each file followed by EOS, cut into ``(n, block)`` rows."""
    ids: list[int] = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id])
    n = len(ids) // block
    return torch.tensor(ids[: n * block]).view(n, block)


def with_repeats(batch: torch.Tensor, share: float, gen: torch.Generator, shortest: int = 8,
                 longest: int = 64) -> torch.Tensor:
    """``batch`` (n, T) with, in about ``share`` of its rows, a span of ``shortest``..``longest`` tokens from the row's
    first half written again further on (over what was there): text in which the rest of a span is predictable only
    by finding where it appeared before, so that the model learns to copy (agents' actions are copies)."""
    out = batch.clone()
    n, length = out.shape
    longest = min(longest, length // 4)
    for i in (torch.rand(n, generator=gen) < share).nonzero().flatten().tolist():
        span = int(torch.randint(shortest, longest + 1, (1,), generator=gen))
        src = int(torch.randint(0, length // 2 - span + 1, (1,), generator=gen))
        dst = int(torch.randint(src + span, length - span + 1, (1,), generator=gen))
        out[i, dst:dst + span] = out[i, src:src + span]
    return out


@torch.no_grad()
def mean_loss(model, blocks: torch.Tensor, batch: int = 32) -> float:
    model.eval()
    total = 0.0
    for i in range(0, blocks.shape[0], batch):
        x = blocks[i : i + batch].to(model.device)
        total += model(input_ids=x, labels=x).loss.item() * x.shape[0]
    model.train()
    return total / blocks.shape[0]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    for name, kind in (("hidden", int), ("layers", int), ("intermediate", int), ("heads", int), ("steps", int),
                       ("seconds", float), ("lr", float)):
        parser.add_argument(f"--{name}", type=kind, default=None, help="overrides the preset")
    parser.add_argument("--corpus", choices=("narrow", "wide"), default=None, help="overrides the preset")
    parser.add_argument("--block", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=float, default=0.0,
                        help="share of training rows given a repeated span (with_repeats), to learn copying")
    parser.add_argument("--repeat_longest", type=int, default=64,
                        help="the longest repeated span (tokens; from 8 to a quarter of --block)")
    parser.add_argument("--eval_every", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU machine (minutes for billions of tokens)")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: the preset's asset)")
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    problems = []  # every problem at once, before the corpus loads or anything trains
    if args.steps is None and args.seconds is None:
        problems.append("give --steps or --seconds")
    for key in ("block", "batch", "eval_every", "hidden", "layers", "intermediate", "heads"):
        if getattr(args, key) < 1:
            problems.append(f"--{key} must be 1 or more, got {getattr(args, key)}")
    if not 0.0 <= args.repeats <= 1.0:
        problems.append(f"--repeats is a share of rows, from 0 to 1; got {args.repeats}")
    if args.repeats and not 8 <= args.repeat_longest <= args.block // 4:
        problems.append(f"--repeat_longest must be from 8 (the shortest span) to a quarter of --block "
                        f"({args.block // 4}); got {args.repeat_longest}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        problems.append(f"--device {args.device}: this machine has no CUDA device; use --device cpu")
    elif args.device != "cpu" and not args.device.startswith("cuda"):
        problems.append(f"--device must be cpu or cuda[:N], got {args.device!r}")
    if args.out.exists() and not args.out.is_dir():
        problems.append(f"--out {args.out} is a file, not a model directory")
    elif not os.access(next(p for p in (args.out, *args.out.parents) if p.exists()), os.W_OK):
        problems.append(f"--out {args.out}: not writable here")
    if problems:
        parser.error("; ".join(problems))
    args.command = " ".join(["python -m icae.scripts.build_tiny_base", *(sys.argv[1:] if argv is None else argv)])
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    from transformers import AutoModelForCausalLM

    torch.manual_seed(args.seed)
    tok = tiny_tokenizer()
    files = base_corpus_files(args.corpus)
    data = token_blocks(tok, files, args.block)
    held_train = data[-64:]  # held-out blocks of the training mix
    data = data[:-64]
    unseen = token_blocks(tok, top_level_modules("n", "z"), args.block)
    unseen = unseen[torch.randperm(unseen.shape[0], generator=torch.Generator().manual_seed(1))[:128]]
    config = tiny_config(
        "qwen2", vocab_size=len(tok), hidden_size=args.hidden, num_layers=args.layers,
        intermediate_size=args.intermediate, num_attention_heads=args.heads, num_key_value_heads=max(1, args.heads // 2),
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None, initializer_range=0.02,
    )
    model = AutoModelForCausalLM.from_config(config).to(args.device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(args.seed)
    budget = f"{args.steps} steps" if args.steps else f"{args.seconds:.0f} s"
    print(f"{len(files)} files, {data.numel():,} tokens in {data.shape[0]} blocks of {args.block}; "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters; training for {budget}", flush=True)
    log: list[dict] = []
    probe_ids = token_blocks(tok, top_level_modules("n", "z"), 16 * (24 + 64))[0].tolist()
    start, step = time.perf_counter(), 0
    while True:
        elapsed = time.perf_counter() - start
        if (args.steps and step >= args.steps) or (not args.steps and elapsed >= args.seconds):
            break
        frac = step / args.steps if args.steps else elapsed / args.seconds
        lr = args.lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * frac))  # warm-up, then cosine
        for group in opt.param_groups:
            group["lr"] = lr
        batch = data[torch.randint(0, data.shape[0], (args.batch,), generator=gen)]
        if args.repeats:
            batch = with_repeats(batch, args.repeats, gen, longest=args.repeat_longest)
        batch = batch.to(args.device)  # sampled on the CPU (the same rows for a seed on any device)
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % args.eval_every == 0:
            row = {"step": step, "seconds": round(time.perf_counter() - start, 1), "train_loss": round(loss.item(), 4),
                   "unseen_loss": round(mean_loss(model, unseen), 4), "lr": lr,
                   # copying, as it forms (or not): 16 rows at distance 64, the second reading (the first)
                   **running_copy(model, probe_ids)}
            log.append(row)
            print(json.dumps(row), flush=True)
    seconds = time.perf_counter() - start
    held_loss, unseen_loss = mean_loss(model, held_train), mean_loss(model, unseen)
    print(f"done: {step} steps in {seconds:.0f} s; held-out perplexity {math.exp(held_loss):.1f} (training mix), "
          f"{math.exp(unseen_loss):.1f} (modules n-z, never read)")
    model.eval()
    copy = copy_scores(model, tok)
    model.to("cpu")  # saved as a CPU model whatever it trained on
    for c in copy:
        print(f"copying at distance {c['distance']}: {c['copy']:.3f} of a repeated span's tokens right "
              f"({c['first_read']:.3f} the first time), {c['copy_whole_span']:.2f} of spans whole")
    # written beside the asset and swapped in whole (an existing one is replaced, said so): never half a base
    args.out.parent.mkdir(parents=True, exist_ok=True)
    final = temp_dir(args.out.parent, f".{args.out.name}.final.")
    try:
        model.save_pretrained(final)
        tok.save_pretrained(final)
        ship(final, args.out, lambda staging: write_record(
            staging, args, step, seconds, len(files), data.numel(), held_loss, unseen_loss, log, copy))
    finally:
        shutil.rmtree(final, ignore_errors=True)


COPY_DISTANCES = (64, 512, 1024)


def running_copy(model, ids: list[int]) -> dict:
    was_training = model.training
    score = copy_score(model.eval(), ids, 64, 24, 16)
    model.train(was_training)
    return {"copy_64": round(score.copy, 4), "first_read": round(score.first_read, 4)}


def copy_scores(model, tok, span: int = 24, rows: int = 40) -> list[dict]:
    """The model's in-context copying on modules n-z (icae.metrics.copying) at ``COPY_DISTANCES``."""
    ids = token_blocks(tok, top_level_modules("n", "z"), rows * (span + max(COPY_DISTANCES)))[0].tolist()
    return [copy_score(model, ids, d, span, rows).to_dict() for d in COPY_DISTANCES]


def write_record(directory: Path, args, steps, seconds, num_files, num_tokens, held_loss, unseen_loss, log,
                 copy) -> None:
    command = args.command
    atomic_write_json(directory / "training_log.json", {
        "command": command, "args": {k: str(v) for k, v in vars(args).items()}, "steps": steps,
        "seconds": round(seconds, 1), "files": num_files, "tokens": num_tokens,
        "held_out_perplexity": math.exp(held_loss), "unseen_perplexity": math.exp(unseen_loss), "copy": copy,
        "log": log,
    })
    atomic_write_text(directory / "TRAINING.md", (
        f"# Training record\n\nRebuild: `{command}` (the standard library of Python 3.11 is the corpus).\n\n"
        f"- shape: Qwen2, hidden {args.hidden}, {args.layers} layers, {args.heads} heads, intermediate "
        f"{args.intermediate}, vocabulary 4096 (the shipped BPE)\n"
        f"- data: {num_files} files ({args.corpus} corpus), {num_tokens:,} tokens\n"
        f"- {steps} steps of {args.batch}x{args.block} tokens, AdamW lr {args.lr} (warm-up 100, cosine), "
        f"{seconds:.0f} s on this machine\n"
        f"- held-out perplexity {math.exp(held_loss):.1f} on blocks of the training mix; "
        f"{math.exp(unseen_loss):.1f} on modules n-z, which it never read\n"
        f"- copying (a span of 24 tokens of modules n-z read again after a distance; teacher-forced argmax, "
        f"icae.metrics.copying): " + "; ".join(
            f"distance {c['distance']}: {c['copy']:.3f} of its tokens right ({c['first_read']:.3f} the first time)"
            for c in copy) + (f"; rows given a repeated span in training: {args.repeats:g}" if args.repeats else "")
        + "\n"
        f"- curve: `loss.png`; every evaluation: `training_log.json`\n"
    ))
    plt = pyplot()
    if plt is not None and log:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot([r["step"] for r in log], [r["train_loss"] for r in log], label="training batch")
        ax.plot([r["step"] for r in log], [r["unseen_loss"] for r in log], marker="o", label="modules n-z (unseen)")
        ax.set_xlabel("step")
        ax.set_ylabel("cross-entropy")
        ax.set_title(f"{args.out.name}: language-model training")
        ax.legend()
        save_png(fig, directory / "loss.png", dpi=110)


if __name__ == "__main__":
    entry(main)
