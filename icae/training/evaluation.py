"""Held-out evaluation of a compressor on pretraining samples, with the no-memory baseline beside it.

The baseline is the same model and decoder with the memory slots removed: what the decoder's language-model prior
alone achieves. A compressor is only useful where it beats that.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from icae.data.tasks import AnswerSample
from icae.errors import UserError
from icae.metrics import bleu1, exact_match
from icae.models.base import CompressorBase
from icae.models.layouts import IGNORE


@dataclass
class Tally:
    """One objective's teacher-forced sums over batches, weighted by the tokens that carry a loss."""

    loss_sum: float = 0.0  # each batch's mean loss * its counted tokens
    correct: int = 0  # counted tokens predicted right (greedy)
    total: int = 0  # counted tokens

    def add(self, out) -> None:
        """Add one forward's ``out.loss`` (mean over counted tokens) and its greedy token accuracy."""
        pred, target = out.logits[:, :-1].argmax(dim=-1), out.labels[:, 1:]  # (batch, n), (batch, n)
        counted = target != IGNORE
        total = int(counted.sum())
        self.correct += int(((pred == target) & counted).sum())
        self.total += total
        self.loss_sum += out.loss.item() * total

    def metrics(self, objective: str) -> dict:
        """``{objective}_loss`` and ``{objective}_token_accuracy``; nothing when no token was counted."""
        if not self.total:
            return {}
        return {f"{objective}_loss": self.loss_sum / self.total,
                f"{objective}_token_accuracy": self.correct / self.total}


@torch.no_grad()
def evaluate_pretraining(
    model: CompressorBase,
    samples: list[dict],
    batch_size: int = 8,
    num_generate: int = 16,
    max_new_tokens: int | None = None,
    leave_tokens_for_lm: int = 0,
    min_tokens_for_lm: int = 1,
    no_memory: bool = False,
    return_texts: bool = False,
) -> dict:
    """Teacher-forced AE (and LM, where samples have continuations) loss and token accuracy over ``samples``;
    BLEU-1 and exact match of greedy reconstructions of the first ``num_generate`` samples.
    ``no_memory`` evaluates the baseline with the slots removed.
    """
    was_training = model.training
    model.eval()
    ae, lm = Tally(), Tally()
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        contexts = [torch.tensor(s["input_ids"]) for s in chunk]
        memory = model.compress(contexts)
        if no_memory:
            memory = memory.without_slots()
        ae.add(model(memory=memory, mode="ae", target_ids=[model.ae_target(c) for c in contexts]))
        lm_rows = [i for i, s in enumerate(chunk) if len(s.get("continuation_ids") or []) >= max(min_tokens_for_lm, leave_tokens_for_lm + 1)]
        if lm_rows:
            conts = [list(chunk[i]["continuation_ids"]) for i in lm_rows]
            lm.add(model(
                memory=memory.select(lm_rows),
                mode="lm",
                prompt_ids=[c[:leave_tokens_for_lm] for c in conts],
                target_ids=[c[leave_tokens_for_lm:] for c in conts],
            ))
    metrics = {**ae.metrics("ae"), **lm.metrics("lm")}
    gen = samples[:num_generate]
    if gen:
        contexts = [torch.tensor(s["input_ids"]) for s in gen]
        texts, outputs = [], []
        for start in range(0, len(gen), batch_size):
            part = contexts[start : start + batch_size]
            memory = model.compress(part)
            if no_memory:
                memory = memory.without_slots()
            limit = max_new_tokens or max(c.numel() for c in part) + 8
            ids = model.generate(memory, mode="ae", max_new_tokens=limit)
            outputs += model.tokenizer.batch_decode(ids, skip_special_tokens=True)
            texts += model.tokenizer.batch_decode(part, skip_special_tokens=True)
        metrics["ae_bleu1"] = sum(bleu1(t, o) for t, o in zip(texts, outputs)) / len(gen)
        metrics["ae_exact_match"] = sum(exact_match(t, o) for t, o in zip(texts, outputs)) / len(gen)
        if return_texts:
            metrics["texts"] = list(zip(texts, outputs))
    model.train(was_training)
    return metrics


def context_memory(model: CompressorBase, rows: list, read: str = "slots"):
    """The memory a decoder reads for ``rows`` (1-D id tensors or id lists): ``"slots"`` (what ``compress`` gives;
    SimpleLLM's is its tokens), ``"none"`` (the slots removed: the no-memory baseline) or ``"tokens"`` (the
    context's own token embeddings where the slots go, positions 1..L: the decoder reading the full context)."""
    if read not in ("slots", "none", "tokens"):  # before any compression runs
        raise ValueError(f"read must be slots, none or tokens, got {read!r}")
    if read == "tokens":
        return model.token_memory([torch.as_tensor(r) for r in rows])
    memory = model.compress(rows)
    return memory.without_slots() if read == "none" else memory


@torch.no_grad()
def teacher_forced_scores(model: CompressorBase, samples: list[AnswerSample], mode: str = "ft", batch_size: int = 8,
                          no_memory: bool = False, as_tokens: bool = False) -> list[dict]:
    """Per sample: token accuracy and mean loss of its ``target_ids`` read after its memory and ``prompt_ids``.

    ``no_memory`` removes the slots (SimpleLLM: the context) and keeps the prompt: the same-run baseline that shows
    what the memory contributes. ``as_tokens`` puts the context's own token embeddings where the slots go (positions
    1..L, as SimpleLLM reads it): the same decoder reading the full context, the other end of "context value kept";
    a sample whose context does not fit ``model_max_length`` as tokens gets None for both scores.
    """
    import torch.nn.functional as F

    if no_memory and as_tokens:
        raise ValueError("no_memory and as_tokens exclude each other")

    def score(chunk: list[AnswerSample]) -> list[dict]:
        read = "tokens" if as_tokens else "none" if no_memory else "slots"
        memory = context_memory(model, [torch.tensor(s.input_ids) for s in chunk], read)
        prefixes = [torch.tensor(s.prefix_ids, dtype=torch.long) for s in chunk] if chunk[0].prefix_ids else None
        out = model(memory=memory, mode=mode, prompt_ids=[torch.tensor(s.prompt_ids) for s in chunk],
                    target_ids=[torch.tensor(s.target_ids) for s in chunk], prefix_ids=prefixes)
        logits, target = out.logits[:, :-1].float(), out.labels[:, 1:]  # (batch, n, vocab), (batch, n)
        counted = target != IGNORE
        correct = ((logits.argmax(dim=-1) == target) & counted).sum(dim=1)
        loss = F.cross_entropy(logits.transpose(1, 2), target, ignore_index=IGNORE, reduction="none")  # (batch, n)
        return [{"token_accuracy": int(correct[i]) / max(int(counted[i].sum()), 1),
                 "loss": float((loss[i] * counted[i]).sum()) / max(int(counted[i].sum()), 1)}
                for i in range(len(chunk))]

    scores = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        try:
            scores += score(chunk)
        except ValueError as e:
            # As tokens a context may not fit the window its slots fitted: score the others, None for it.
            if not as_tokens or "model_max_length" not in str(e):
                raise
            for sample in chunk:
                try:
                    scores += score([sample])
                except ValueError:
                    scores.append({"token_accuracy": None, "loss": None})
    return scores


@torch.no_grad()
def reconstruct(model: CompressorBase, text: str, per_segment: bool = True) -> dict:
    """Compress ``text``, decode it back (greedy), and score the reconstruction."""
    if not text.strip():
        raise UserError("the input is empty: give some text to compress")
    ids = model.tokenize([text])[0]
    rate, k = model.args.mean_compression_rate, model.args.fixed_mem_size
    if per_segment and ids.numel() > k * rate:  # each segment compressed and decoded on its own, as one batch
        memory = model.compress([ids[i : i + k * rate] for i in range(0, ids.numel(), k * rate)])
        generated = [t for out in model.generate(memory, mode="ae", max_new_tokens=k * rate + 8) for t in out]
    else:
        memory = model.compress([ids])
        generated = model.generate(memory, mode="ae", max_new_tokens=ids.numel() + 8)[0]
    slots = int(memory.num_slots.sum())
    reconstruction = model.tokenizer.decode(generated, skip_special_tokens=True)
    return {"input_tokens": int(ids.numel()), "slots": slots, "compression_rate": ids.numel() / slots,
            "reconstruction": reconstruction, "bleu1": bleu1(text, reconstruction)}
