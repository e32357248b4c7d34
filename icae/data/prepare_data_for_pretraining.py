"""Prepare pretraining data: documents -> tokenised (context, continuation) samples, a held-out split, saved to disk.

    python -m icae.data.prepare_data_for_pretraining --config_path icae/configs/pretrain_tiny_qwen2.yaml

Each document is tokenised with the base model's tokenizer and cut into consecutive windows of
``context_length + continuation_length`` tokens: the first part is the context the encoder compresses (the AE target),
the rest is the continuation the LM objective predicts. Windows whose context is shorter than ``min_len`` are
dropped. Documents are read in source order until ``token_num`` tokens are collected, shuffled with the seed, and whole
documents are held out until ``eval_size`` samples are reached (held-out text is never seen in training); with
``eval_dataset_repo`` the held-out samples come from that source instead. The two
splits are written with ``datasets.Dataset.save_to_disk`` to ``train_output_file`` and ``eval_output_file``, each
atomically. Deterministic for a seed.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

from tqdm.auto import tqdm

from icae.config import Config, config_from_cli
from icae.data.sources import SourceError, iter_documents, token_prefix
from icae.data.split_paths import INFO_NAME, check_prepared_inputs, check_split_outputs, load_split
from icae.data.tasks import Split
from icae.errors import entry
from icae.models.loading import load_tokenizer
from icae.utils.io import atomic_write_json, temp_dir


def sample_lengths(config: Config) -> tuple[int, int]:
    """(context tokens, continuation tokens) of a pretraining sample."""
    pre, model = config.pretrain, config.model
    context = pre.context_length or model.fixed_mem_size * model.mean_compression_rate
    continuation = pre.continuation_length if pre.continuation_length is not None else pre.min_tokens_for_lm
    return context, continuation


def cut_document(ids: list[int], context: int, continuation: int, min_len: int) -> list[tuple[list[int], list[int]]]:
    """Consecutive windows of ``context + continuation`` tokens, split into (context, continuation)."""
    window = context + continuation
    out = []
    for start in range(0, len(ids), window):
        chunk = ids[start : start + window]
        ctx, cont = chunk[:context], chunk[context:]
        if len(ctx) >= max(1, min_len):
            out.append((ctx, cont))
    return out


def _texts(config: Config, source: str, cache: str | None):
    """The documents of ``source``; with ``cache`` (``long_text_cache``), read from that JSON list when it exists, else
    read from the source and written there (atomically) for the next preparation."""
    data = config.data
    if cache and Path(cache).is_file():
        try:
            texts = json.loads(Path(cache).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise SourceError(f"long_text_cache {cache}: not a readable JSON list of texts ({e}); delete it to rebuild")
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise SourceError(f"long_text_cache {cache}: expected a JSON list of texts; delete it to rebuild")
        return texts
    texts = iter_documents(source, data.dataset_split, data.text_field, data.file_extensions, data.dataset_config_name)
    if cache:
        texts = list(texts)
        atomic_write_json(cache, texts)
    return texts


def _documents(config: Config, tokenizer, source: str, show_progress: bool, token_num: int | None,
               cache: str | None = None):
    """Tokenised, windowed documents of ``source`` (each a list of (context, continuation)) and their token count."""
    context, continuation = sample_lengths(config)
    docs: list[list[tuple[list[int], list[int]]]] = []
    total = 0
    texts = _texts(config, source, cache)
    bar = tqdm(texts, desc=f"tokenising {Path(source).name}", unit="doc", disable=not show_progress)
    for text in bar:
        # With a token budget, a huge document is tokenised only as far as the budget reaches (whole windows).
        window = context + continuation
        needed = None if token_num is None else -(-(token_num - total) // window) * window
        ids = token_prefix(tokenizer, text, needed)
        samples = cut_document(ids, context, continuation, config.pretrain.min_len)
        if samples:
            docs.append(samples)
            total += sum(len(c) + len(k) for c, k in samples)
            bar.set_postfix(tokens=total, refresh=False)
        if token_num is not None and total >= token_num:
            break
    if not docs:
        raise SourceError(f"source {source!r} gave no sample: no document with at least min_len="
                          f"{config.pretrain.min_len} tokens")
    return docs, total


def windows(config: Config, tokenizer, source: str, count: int, context: int, continuation: int) -> list[dict]:
    """``count`` windows of ``context + continuation`` tokens drawn (seeded) from every document of ``source``:
    held-out samples of another shape than the prepared ones (a benchmark, another compression rate)."""
    shaped = config.replace(context_length=context, continuation_length=continuation, min_len=context)
    docs, _ = _documents(shaped, tokenizer, source, False, None)
    samples = [s for doc in docs for s in doc if len(s[1]) == continuation]
    random.Random(config.seed).shuffle(samples)
    return [{"sample_id": i, "input_ids": c, "continuation_ids": k} for i, (c, k) in enumerate(samples[:count])]


def segment_samples(config: Config, docs, n_long: int) -> list[tuple[list[int], list[int]]]:
    """One-segment windows (``fixed_mem_size * mean_compression_rate`` tokens) re-cut from the training documents
    ``docs``, as many as make them ``segment_sample_ratio`` of the training samples; none when the samples are one
    segment long already."""
    ratio, model = config.pretrain.segment_sample_ratio, config.model
    segment = model.fixed_mem_size * model.mean_compression_rate
    context, continuation = sample_lengths(config)
    if ratio <= 0 or context <= segment or n_long == 0:
        return []
    pool = []
    for doc in docs:
        ids = [t for c, k in doc for t in c + k]  # the document's tokens again (its windows cover it in order)
        pool.extend(cut_document(ids, segment, continuation, segment))
    random.Random(config.seed + 1).shuffle(pool)
    return pool[: round(n_long * ratio / (1.0 - ratio))]


def build_samples(config: Config, tokenizer, show_progress: bool = True) -> tuple[list[dict], list[dict], dict]:
    """Read, tokenise, cut and split. Returns (train samples, eval samples, info).

    With ``eval_dataset_repo`` the held-out samples are drawn from all windows of that source (shuffled with the seed)
    and every document of ``dataset_repo`` trains; otherwise whole documents of ``dataset_repo`` are held out.
    """
    data, pre = config.data, config.pretrain
    context, continuation = sample_lengths(config)
    seed = config.seed
    extra_docs, extra_tokens = [], 0
    for extra in pre.extra_dataset_repos:  # more training text (tool outputs): every document joins the pool
        more, tokens = _documents(config, tokenizer, extra, show_progress, None)
        extra_docs, extra_tokens = extra_docs + more, extra_tokens + tokens
    budget = pre.token_num
    if extra_docs and pre.extra_dataset_share:  # the main source is cut so that the extra text is the asked share
        share = round(extra_tokens * (1.0 - pre.extra_dataset_share) / pre.extra_dataset_share)
        budget = min(budget, share) if budget is not None else share
    docs, total = _documents(config, tokenizer, data.dataset_repo, show_progress, budget, pre.long_text_cache)
    docs, total = docs + extra_docs, total + extra_tokens
    rng = random.Random(seed)
    rng.shuffle(docs)
    if data.eval_dataset_repo:
        held_docs, _ = _documents(config, tokenizer, data.eval_dataset_repo, show_progress, None)
        train_docs = docs
        train = [s for doc in docs for s in doc]
        held = [s for doc in held_docs for s in doc]
        random.Random(seed).shuffle(held)  # windows from every held-out document, not the first few documents
    else:
        train, held, train_docs = [], [], []
        for doc in docs:
            if len(held) < pre.eval_size:
                held.extend(doc)
            else:
                train.extend(doc)
                train_docs.append(doc)
    held = held[: pre.eval_size] if pre.eval_size else []
    short = segment_samples(config, train_docs, len(train))
    train = train + short
    if not train:
        raise SourceError(f"all {len(held)} samples of {data.dataset_repo} went to the held-out split (it takes whole "
                          f"documents until eval_size={pre.eval_size} samples, and this source has too few documents): "
                          "set eval_dataset_repo to a separate held-out source, or eval_size: 0 for no held-out split, "
                          "or add documents")
    rows = lambda samples, offset: [  # noqa: E731 - a sample id makes objective choices reproducible
        {"sample_id": offset + i, "input_ids": c, "continuation_ids": k} for i, (c, k) in enumerate(samples)
    ]
    info = {
        "source": data.dataset_repo,
        "eval_source": data.eval_dataset_repo or data.dataset_repo,
        "documents": len(docs),
        "tokens": total,
        "context_length": context,
        "continuation_length": continuation,
        "extra_sources": list(pre.extra_dataset_repos),
        "extra_tokens": extra_tokens,
        "segment_samples": len(short),
        "segment_sample_ratio": pre.segment_sample_ratio,  # what shaped the mix: a curriculum stage checks it on reuse
        "extra_dataset_share": pre.extra_dataset_share if extra_docs else None,
        "train_samples": len(train),
        "eval_samples": len(held),
        "seed": seed,
        "tokenizer": config.model.model_name_or_path,
    }
    return rows(train, 0), rows(held, len(train)), info


def save_split(samples: list[dict], path: str | Path, info: dict) -> None:
    """``save_to_disk`` into a temporary directory, then swap it in: a reader never sees a half-written split."""
    from datasets import Dataset

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir(path.parent, f".{path.name}.")
    try:
        Dataset.from_list(samples).save_to_disk(str(tmp))
        (tmp / INFO_NAME).write_text(json.dumps(info, indent=2) + "\n")
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def prepare(config: Config, show_progress: bool = True) -> dict:
    """Tokenise, cut and split the configured source; write both splits; return the preparation's info."""
    config.require("data preparation", "dataset_repo", "train_output_file", "eval_output_file")
    check_split_outputs(config)  # nothing that preparation did not write is ever replaced
    tokenizer = load_tokenizer(config.model.model_name_or_path)
    train, held, info = build_samples(config, tokenizer, show_progress)
    save_split(train, config.pretrain.train_output_file, {**info, "split": "train"})
    save_split(held, config.pretrain.eval_output_file, {**info, "split": "eval"})
    return info


def load_pretraining(config: Config, tokenizer=None) -> Split:
    """The prepared splits (``datasets.Dataset`` of ``{sample_id, input_ids, continuation_ids}``), cut to
    ``max_train_samples`` / ``max_eval_samples``; a clear error when preparation has not run."""
    check_prepared_inputs(config)
    train, held = load_split(config.pretrain.train_output_file), load_split(config.pretrain.eval_output_file)
    if config.data.max_train_samples:
        train = train.select(range(min(config.data.max_train_samples, len(train))))
    if config.data.max_eval_samples:
        held = held.select(range(min(config.data.max_eval_samples, len(held))))
    return Split(train, held, {"train_samples": len(train), "eval_samples": len(held)})


def main(argv: list[str] | None = None) -> dict:
    """The recipe (``python -m icae.data.prepare_data_for_pretraining``, also ``icae.scripts.`` and ``icae prepare``):
    it lives here so that the original tool's command runs this module without importing a recipe."""
    config = config_from_cli(argv, description=__doc__.split("\n\n")[0])
    info = prepare(config)
    print(f"{info['documents']} documents, {info['tokens']} tokens -> {info['train_samples']} train / "
          f"{info['eval_samples']} eval samples of {info['context_length']}+{info['continuation_length']} tokens\n"
          f"train: {config.pretrain.train_output_file}\neval:  {config.pretrain.eval_output_file}")
    return info


if __name__ == "__main__":  # the original tool's entry point
    entry(main)
