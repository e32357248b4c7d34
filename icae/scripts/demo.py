"""CPU demo: what the shipped compressors keep of code they never saw, then a compressor learning live.

    python -m icae.scripts.demo --config_path icae/configs/pretrain_tiny_qwen2.yaml      (what `make demo` runs)

1. The shipped pretrained compressors ``tiny-icae-4x`` and ``tiny-icae-8x`` (on the shipped ``tiny-qwen2-lm``) compress
   held-out windows of the standard-library modules n-z, which neither they nor the base LM ever read, and decode them
   back. Reported at each rate: held-out BLEU-1 and exact match of the greedy reconstruction, and the teacher-forced
   token accuracy, beside the no-memory baseline (the same decoder with the slots removed: what its language-model
   prior alone reconstructs); three examples, original beside reconstruction.
2. A long held-out tool output (a traceback of a few hundred tokens, made by running a script that fails in a library
   no compressor trained on) compressed by each shipped compressor and read back **whole** from all its
   slots at once (how the server and every downstream task read it), beside segment by segment and no memory.
3. A short live training from scratch with the same recipe (the config), measured the same way before and after.

Writes the metrics JSON (``shipped``, ``before``, ``after``, ``no_memory_*``, examples, log history), a loss-curve
PNG, and the live run's checkpoint.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from icae.config import config_from_cli
from icae.data.corpus import base_corpus_files, write_corpus, write_stdlib_corpus
from icae.data.prepare_data_for_pretraining import prepare, windows
from icae.models import ICAE, load_checkpoint
from icae.models.loading import SHIPPED_COMPRESSORS, load_tokenizer
from icae.scripts import entry
from icae.training import evaluate_pretraining
from icae.training.evaluation import reconstruct
from icae.training.pretraining import build_trainer
from icae.training.results import free_stem, results_dir
from icae.utils.io import atomic_write_json
from icae.utils.plotting import pyplot, save_png

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "pretrain_tiny_qwen2.yaml"
ROWS = [("ae_bleu1", "BLEU-1 (greedy)"), ("ae_exact_match", "exact match"), ("ae_token_accuracy", "token accuracy"),
        ("ae_loss", "AE loss")]


def held_out_metrics(model: ICAE, samples: list[dict], num_generate: int) -> dict:
    """The model with its memory, and the same decoder without it (the no-memory baseline)."""
    kwargs = dict(batch_size=32, num_generate=num_generate, return_texts=True)
    return {"memory": evaluate_pretraining(model, samples, **kwargs),
            "no_memory": evaluate_pretraining(model, samples, no_memory=True, **kwargs)}


def table(title: str, columns: list[tuple[str, dict]]) -> str:
    head = f"{title:<22}" + "".join(f"{name:>16}" for name, _ in columns)
    lines = [head, "-" * len(head)]
    for key, label in ROWS:
        lines.append(f"{label:<22}" + "".join(f"{m.get(key, float('nan')):>16.3f}" for _, m in columns))
    return "\n".join(lines)


def shipped_part(config) -> dict:
    """Part 1: every shipped compressor on held-out windows at its own rate, and on one longer held-out passage
    reconstructed segment by segment."""
    out = {}
    tokenizer = load_tokenizer(config.model.model_name_or_path)
    for name in SHIPPED_COMPRESSORS:
        model = load_checkpoint(name, train=False)
        rate = model.args.mean_compression_rate
        samples = windows(config, tokenizer, config.data.eval_dataset_repo, config.pretrain.eval_size,
                          model.args.fixed_mem_size * rate, config.pretrain.min_tokens_for_lm)
        measured = held_out_metrics(model, samples, len(samples))
        long = windows(config, tokenizer, config.data.eval_dataset_repo, 1, 5 * model.args.fixed_mem_size * rate, 1)
        text = tokenizer.decode(long[0]["input_ids"])
        out[name] = {"rate": rate, "tokens": model.args.fixed_mem_size * rate, "samples": len(samples),
                     "memory": {k: v for k, v in measured["memory"].items() if k != "texts"},
                     "no_memory": {k: v for k, v in measured["no_memory"].items() if k != "texts"},
                     "examples": [{"original": o, "reconstruction": r} for o, r in measured["memory"]["texts"][:3]],
                     "passage": {"original": text, **reconstruct(model, text)}}
    return out


def long_tool_output(tokenizer, low: int = 250, high: int = 450) -> dict:
    """A held-out tool output of ``low``..``high`` tokens: the first traceback that the tool-output generator makes
    (seed 0) by running a script that fails in a library no compressor trained on. A traceback rather than a pytest
    run: pytest prints its duration, so its text (and what the compressors make of it) would change from run to run."""
    from icae.data.tool_outputs import generate

    # A sandbox of its own (no wait on a pretraining generator's lock), at a fixed path: tracebacks print it, so the
    # same path makes the same text on every run.
    sandbox = Path(tempfile.gettempdir()) / "icae-demo-tool-output"
    for record in generate("heldout", 12, seed=0, work_dir=sandbox, kinds=("traceback",)):
        if low <= len(tokenizer(record["text"], add_special_tokens=False)["input_ids"]) <= high:
            return record
    raise RuntimeError(f"no held-out traceback of {low}-{high} tokens in 12 tries")


def whole_part(record: dict) -> dict:
    """Part 2: one long held-out tool output, reconstructed whole from all its slots by each shipped compressor,
    segment by segment, and by the same decoder with no memory."""
    out = {}
    for name in SHIPPED_COMPRESSORS:
        model = load_checkpoint(name, train=False).eval()
        whole, pieces = reconstruct(model, record["text"], per_segment=False), reconstruct(model, record["text"])
        ids = model.tokenize([record["text"]])[0].tolist()
        none = evaluate_pretraining(model, [{"input_ids": ids}], batch_size=1, num_generate=1, no_memory=True)
        out[name] = {"tokens": whole["input_tokens"], "slots": whole["slots"], "whole": whole,
                     "per_segment_bleu1": pieces["bleu1"], "no_memory_bleu1": none["ae_bleu1"]}
    return out


def plot_losses(log_history: list[dict], path: Path, before: float, after: float, steps: int) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    train = [(h["step"], h["loss"]) for h in log_history if "loss" in h]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if train:
        ax.plot(*zip(*train), label="training loss")
    ax.plot([0, steps], [before, after], "o--", label="held-out AE loss (modules n-z)")
    ax.set(xlabel="step", ylabel="cross-entropy", title="live ICAE training on the tiny CPU model")
    ax.legend()
    save_png(fig, path, dpi=110)
    return True


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)  # run as a module, entry() passes None
    if not any(a.startswith("--config_path") for a in argv):
        argv = ["--config_path", str(DEFAULT_CONFIG), *argv]
    config = config_from_cli(argv, description=__doc__)
    started = time.perf_counter()
    corpus, held = Path(config.data.dataset_repo), Path(config.data.eval_dataset_repo or "")
    if not corpus.exists():
        write_corpus(corpus, base_corpus_files("wide"))  # what the base LM read: never modules n-z
    if config.data.eval_dataset_repo and not held.exists():
        write_stdlib_corpus(held, "n", "z")  # text the base LM and the compressors never read

    shipped = shipped_part(config)
    print(f"\n1. Shipped compressors on {next(iter(shipped.values()))['samples']} held-out windows of modules n-z "
          "(never read by them or by the base LM)")
    for name, r in shipped.items():
        print("\n" + table(f"{name} ({r['tokens']}->{r['tokens'] // r['rate']})",
                           [("with slots", r["memory"]), ("no memory", r["no_memory"])]))
    first = next(iter(shipped.values()))
    for i, ex in enumerate(first["examples"], 1):
        print(f"\nexample {i} ({next(iter(shipped))}):\n--- original ---\n{ex['original']}\n--- reconstructed from "
              f"{first['tokens'] // first['rate']} slots ---\n{ex['reconstruction']}")
    for name, r in shipped.items():
        p = r["passage"]
        print(f"\na longer held-out passage, {name}: {p['input_tokens']} tokens -> {p['slots']} slots, reconstructed "
              f"segment by segment: BLEU-1 {p['bleu1']:.3f}")
    print(f"--- original ---\n{first['passage']['original']}\n--- reconstructed ---\n"
          f"{first['passage']['reconstruction']}")

    record = long_tool_output(load_tokenizer(config.model.model_name_or_path))
    long = whole_part(record)
    print(f"\n2. A long held-out tool output (`{record['command']}`, {record['kind']}), read WHOLE from all "
          "its slots at once, as the server and every downstream task read a compressed context")
    print(f"{'compressor':<16}{'tokens':>8}{'slots':>7}{'whole':>9}{'per segment':>13}{'no memory':>11}   (BLEU-1)")
    for name, r in long.items():
        print(f"{name:<16}{r['tokens']:>8}{r['slots']:>7}{r['whole']['bleu1']:>9.3f}{r['per_segment_bleu1']:>13.3f}"
              f"{r['no_memory_bleu1']:>11.3f}")
    best = next(iter(long))
    print(f"--- original ---\n{record['text']}\n--- {best}, reconstructed whole from {long[best]['slots']} slots ---\n"
          f"{long[best]['whole']['reconstruction']}")

    info = prepare(config, show_progress=False)
    trainer = build_trainer(config)
    model = trainer.accelerator.unwrap_model(trainer.model)
    samples = list(trainer.eval_dataset)
    num = config.pretrain.eval_ae_num_samples
    before = held_out_metrics(model, samples, num)
    train_started = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - train_started
    after = held_out_metrics(model, samples, num)
    out_dir = Path(trainer.args.output_dir)
    trainer.save_model(str(out_dir / "final"))
    print(f"\n3. Live training from scratch ({config.model.model_name_or_path}, {info['context_length']} tokens -> "
          f"{config.model.fixed_mem_size} slots): {trainer.state.global_step} steps in {train_seconds:.0f} s, "
          f"{len(samples)} held-out windows of modules n-z")
    print(table("held-out metric", [("step 0", before["memory"]), ("trained", after["memory"]),
                                    ("no memory", after["no_memory"])]))

    strip = lambda m: {k: v for k, v in m.items() if k != "texts"}  # noqa: E731
    result = {
        "config": config.to_dict(), "data": info, "shipped": shipped, "train_seconds": train_seconds,
        "long_tool_output": {"command": record["command"], "kind": record["kind"], "text": record["text"], **long},
        "steps": trainer.state.global_step, "before": strip(before["memory"]), "after": strip(after["memory"]),
        "no_memory_before": strip(before["no_memory"]), "no_memory_after": strip(after["no_memory"]),
        "examples": [{"original": o, "step_0": b[1], "trained": a[1]} for (o, a), b in
                     zip(after["memory"]["texts"][:8], before["memory"]["texts"])],
        "log_history": trainer.state.log_history, "checkpoint": str(out_dir / "final"),
        "total_seconds": time.perf_counter() - started,
    }
    metrics_dir = results_dir(config)
    # An earlier demo's metrics and plot are kept: this run's go to the next free name (demo_..._2.json).
    stem = free_stem(metrics_dir, f"demo_{Path(config.model.model_name_or_path).name}", (".json", "_loss.png"))
    atomic_write_json(metrics_dir / f"{stem}.json", result)
    png = metrics_dir / f"{stem}_loss.png"
    drew = plot_losses(trainer.state.log_history, png, before["memory"]["ae_loss"], after["memory"]["ae_loss"],
                       trainer.state.global_step)
    print(f"\nmetrics: {metrics_dir / f'{stem}.json'}" + (f"\nloss curve: {png}" if drew else ""))
    print(f"total time: {result['total_seconds']:.0f} s")
    return result


if __name__ == "__main__":
    entry(main)
