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
import tempfile
from pathlib import Path

from tqdm.auto import tqdm

from icae.config import Config, ConfigError, config_from_cli
from icae.data.sources import SourceError, iter_documents

INFO_NAME = "icae_prepare_info.json"


def sample_lengths(config: Config) -> tuple[int, int]:
    """(context tokens, continuation tokens) of a pretraining sample."""
    task, model = config.task, config.model
    context = task.context_length or model.fixed_mem_size * model.mean_compression_rate
    continuation = task.continuation_length if task.continuation_length is not None else task.min_tokens_for_lm
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


def _documents(config: Config, tokenizer, source: str, show_progress: bool, token_num: int | None):
    """Tokenised, windowed documents of ``source`` (each a list of (context, continuation)) and their token count."""
    task = config.task
    context, continuation = sample_lengths(config)
    docs: list[list[tuple[list[int], list[int]]]] = []
    total = 0
    texts = iter_documents(source, task.dataset_split, task.text_field, task.file_extensions, task.dataset_config_name)
    bar = tqdm(texts, desc=f"tokenising {Path(source).name}", unit="doc", disable=not show_progress)
    for text in bar:
        ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
        samples = cut_document(ids, context, continuation, task.min_len)
        if samples:
            docs.append(samples)
            total += sum(len(c) + len(k) for c, k in samples)
            bar.set_postfix(tokens=total, refresh=False)
        if token_num is not None and total >= token_num:
            break
    if not docs:
        raise SourceError(f"source {source!r} gave no sample: no document with at least min_len={task.min_len} tokens")
    return docs, total


def build_samples(config: Config, tokenizer, show_progress: bool = True) -> tuple[list[dict], list[dict], dict]:
    """Read, tokenise, cut and split. Returns (train samples, eval samples, info).

    With ``eval_dataset_repo`` the held-out samples are drawn from all windows of that source (shuffled with the seed)
    and every document of ``dataset_repo`` trains; otherwise whole documents of ``dataset_repo`` are held out.
    """
    task = config.task
    context, continuation = sample_lengths(config)
    seed = config.training.get("seed", 42)
    docs, total = _documents(config, tokenizer, task.dataset_repo, show_progress, task.token_num)
    rng = random.Random(seed)
    rng.shuffle(docs)
    if task.eval_dataset_repo:
        held_docs, _ = _documents(config, tokenizer, task.eval_dataset_repo, show_progress, None)
        train = [s for doc in docs for s in doc]
        held = [s for doc in held_docs for s in doc]
        random.Random(seed).shuffle(held)  # windows from every held-out document, not the first few documents
    else:
        train, held = [], []
        for doc in docs:
            target = held if len(held) < task.eval_size else train
            target.extend(doc)
    held = held[: task.eval_size] if task.eval_size else []
    if not train:
        raise SourceError(f"all {len(held)} samples of {task.dataset_repo} went to the eval split: lower eval_size "
                          "or add text")
    rows = lambda samples, offset: [  # noqa: E731 - a sample id makes objective choices reproducible
        {"sample_id": offset + i, "input_ids": c, "continuation_ids": k} for i, (c, k) in enumerate(samples)
    ]
    info = {
        "source": task.dataset_repo,
        "eval_source": task.eval_dataset_repo or task.dataset_repo,
        "documents": len(docs),
        "tokens": total,
        "context_length": context,
        "continuation_length": continuation,
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
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
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


def check_config(config: Config) -> None:
    problems = []
    if not config.task.dataset_repo:
        problems.append("dataset_repo: name a hub dataset or a local file/directory to prepare")
    for key in ("train_output_file", "eval_output_file"):
        if not getattr(config.task, key):
            problems.append(f"{key}: where to write the prepared split")
    if problems:
        raise ConfigError(problems, "data preparation config")


def prepare(config: Config, show_progress: bool = True) -> dict:
    from icae.models.loading import load_tokenizer

    check_config(config)
    tokenizer = load_tokenizer(config.model.model_name_or_path)
    train, held, info = build_samples(config, tokenizer, show_progress)
    save_split(train, config.task.train_output_file, {**info, "split": "train"})
    save_split(held, config.task.eval_output_file, {**info, "split": "eval"})
    return info


def main(argv: list[str] | None = None) -> dict:
    config = config_from_cli(argv, description=__doc__)
    info = prepare(config)
    print(
        f"{info['documents']} documents, {info['tokens']} tokens -> {info['train_samples']} train / "
        f"{info['eval_samples']} eval samples of {info['context_length']}+{info['continuation_length']} tokens\n"
        f"train: {config.task.train_output_file}\neval:  {config.task.eval_output_file}"
    )
    return info


if __name__ == "__main__":
    main()
