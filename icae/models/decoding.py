"""Decoding: sampling parameters, the next-token choice, and the one KV-cache loop every generator uses.

``Batch`` is the running batch of a KV-cache decoder: rows are prefilled and join it between steps, each with its own
:class:`SamplingParams`, ``torch.Generator``, per-token callback and logprobs request; a row leaves as soon as it stops
(stop token, length, or its callback says so). The models' ``generate`` / ``generate_spans`` /
``generate_incremental`` run it with one group of rows (:func:`decode`); the server keeps one ``Batch`` running and
lets requests join and leave it (continuous batching).

Layout of the running batch: every row's real positions are contiguous and end at the last column
(``[pad][row's positions]``): the cache is ``(rows, heads, width, head_dim)`` per layer and the attention mask
``(rows, width)`` marks the real columns. A step appends one column for every row, so rows stay right-aligned; a row
joining is left-padded (or the batch is) to the common width; rows leaving are cut out and the columns that only
padding still uses are trimmed. Position ids are each row's own, so each row computes what it would compute alone
(sliding-window attention included: a window counted in columns covers the same real positions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Optional, Sequence

import torch

from icae.models import kv

if TYPE_CHECKING:
    from icae.models.base import CompressorBase


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens: greedy by default; ``do_sample`` draws from the (temperature, top-k, top-p) distribution."""

    max_new_tokens: int = 128
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    top_p: float = 1.0  # 1.0: no nucleus cut
    stop_token_ids: Optional[tuple[int, ...]] = None  # None: the tokenizer's EOS; () never stops early

    def __post_init__(self):
        problems = []
        if self.max_new_tokens < 0:
            problems.append(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.do_sample and self.temperature <= 0:
            problems.append(f"temperature must be > 0 when sampling, got {self.temperature}")
        if self.top_k < 0:
            problems.append(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            problems.append(f"top_p must be in (0, 1], got {self.top_p}")
        if problems:
            raise ValueError("; ".join(problems))
        if self.stop_token_ids is not None:
            object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))

    @classmethod
    def of(cls, max_new_tokens: int = 128, do_sample: bool = False, temperature: float = 1.0, top_k: int = 0,
           top_p: float = 1.0, stop_token_ids: Sequence[int] | None = None) -> "SamplingParams":
        return cls(max_new_tokens, do_sample, temperature, top_k, top_p,
                   None if stop_token_ids is None else tuple(stop_token_ids))


def sampling_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """The distribution ``(batch, vocab)`` a sampled token is drawn from, given last-position logits ``(batch, vocab)``.

    Temperature first, then top-k (every token tied with the k-th is kept, as in transformers), then top-p: the
    smallest set of most likely tokens whose probability reaches ``top_p`` (a token is dropped once the tokens before
    it already reach ``top_p``; the most likely token is always kept).
    """
    logits = logits.float() / params.temperature
    if params.top_k > 0:
        kth = torch.topk(logits, min(params.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        before = probs.cumsum(dim=-1) - probs  # probability of the more likely tokens
        drop = before >= params.top_p
        drop[:, 0] = False
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits.softmax(dim=-1)


def pick_tokens(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None = None) -> torch.Tensor:
    """The next token of each row, ``(batch,)``, from last-position logits ``(batch, vocab)``."""
    if not params.do_sample:
        return logits.argmax(dim=-1)
    return torch.multinomial(sampling_probs(logits, params), 1, generator=generator).squeeze(-1)


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token's log-probability under the model (the raw logits' log-softmax, before temperature and cuts,
    as OpenAI and vLLM report it) and the ``top`` most likely tokens as (id, logprob), most likely first."""

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


# A row's callback: (token, its logprob or None) -> True to stop the row after this token.
OnToken = Callable[[int, Optional[TokenLogprob]], bool]


@dataclass(eq=False)
class Row:
    """One sequence of a running :class:`Batch`.

    ``on_token`` is called with each kept token (a stop token is not kept); it returns True to end the row there
    (``finish`` "stop": a stop string, a cancelled client). ``logprobs``: None for none, k >= 0 for the chosen token's
    logprob and the k most likely alternatives. ``finish`` is None while the row runs, then "stop" or "length".
    """

    params: SamplingParams
    generator: Optional[torch.Generator] = None
    on_token: Optional[OnToken] = None
    logprobs: Optional[int] = None
    stop_ids: frozenset = frozenset()  # set on joining: params.stop_token_ids, or the tokenizer's EOS
    limit: int = 0  # set on joining: new tokens allowed (max_new_tokens, bounded by the window)
    ids: list[int] = field(default_factory=list)
    finish: Optional[str] = None

    def take(self, token: int, logprob: Optional[TokenLogprob]) -> bool:
        """Record ``token``; True when the row is done."""
        if token in self.stop_ids:
            self.finish = "stop"
            return True
        self.ids.append(token)
        if self.on_token is not None and self.on_token(token, logprob):
            self.finish = "stop"
        elif len(self.ids) >= self.limit:
            self.finish = "length"
        return self.finish is not None


@dataclass
class Prefilled:
    """A group of rows after their prefill: the cache ``(rows, heads, width, head_dim)`` per layer, the mask
    ``(rows, width)``, each row's next position id ``(rows,)`` and next-token logits ``(rows, vocab)``."""

    cache: object
    mask: torch.Tensor
    next_pos: torch.Tensor
    logits: torch.Tensor


@torch.no_grad()
def prefill(model: "CompressorBase", inputs: dict[str, torch.Tensor], cache=None) -> Prefilled:
    """Run a left-padded decoder batch (inputs_embeds, attention_mask, position_ids) through the decoder.

    ``cache``: keys/values of positions before ``inputs``, whose attention mask then covers them too. It is extended
    in place (the returned ``Prefilled.cache`` is the same object).
    """
    cache = cache if cache is not None else kv.new_cache()
    with model.decoder_context():
        out = model.model(**inputs, cache=cache, use_cache=True, logits_to_keep=1)
    mask = inputs["attention_mask"]
    return Prefilled(out.cache, mask, inputs["position_ids"][:, -1] + 1, out.logits[:, -1].float())


class Batch:
    """The running batch: rows join (:meth:`join`) and leave between steps (:meth:`step`)."""

    def __init__(self, model: "CompressorBase"):
        self.model = model
        self.rows: list[Row] = []
        self.cache = kv.new_cache()  # per layer keys/values (rows, heads, W, head_dim)
        self.mask = torch.zeros(0, 0, dtype=torch.long)  # (rows, W)
        self.next_pos = torch.zeros(0, dtype=torch.long)  # (rows,)
        self.logits = torch.zeros(0, 0)  # (rows, vocab): what each row's next token is picked from
        self.steps = 0  # forward passes of decoding steps (prefills not counted)

    def __len__(self) -> int:
        return len(self.rows)

    def join(self, group: Prefilled, rows: Sequence[Row]) -> list[Row]:
        """Add prefilled rows. Each row's window bound is set here; rows with nothing to generate (limit 0) end at
        once and are returned (finish "length")."""
        window, lengths = self.model.args.model_max_length, group.mask.sum(dim=1).tolist()
        default_stops = frozenset({self.model.tokenizer.eos_token_id})
        keep, ended = [], []
        for i, row in enumerate(rows):
            row.stop_ids = default_stops if row.params.stop_token_ids is None else frozenset(row.params.stop_token_ids)
            # Generating token k feeds tokens 1..k-1 back: the window of model_max_length positions bounds the count.
            row.limit = max(min(row.params.max_new_tokens, window - int(lengths[i]) + 1), 0)
            if row.limit == 0:
                row.finish = "length"
                ended.append(row)
            else:
                keep.append(i)
        if not keep:
            return ended
        index = torch.tensor(keep, device=group.mask.device)
        layers = [(k.index_select(0, index), v.index_select(0, index)) for k, v in kv.tensors(group.cache)]
        mask, next_pos = group.mask.index_select(0, index), group.next_pos.index_select(0, index)
        logits = group.logits.index_select(0, index)
        if not self.rows:
            self.mask, self.next_pos, self.logits = mask, next_pos, logits
        else:
            width = max(self.mask.shape[1], mask.shape[1])
            layers = [(torch.cat([kv.left_pad(k0, width), kv.left_pad(k1, width)]),
                       torch.cat([kv.left_pad(v0, width), kv.left_pad(v1, width)]))
                      for (k0, v0), (k1, v1) in zip(kv.tensors(self.cache), layers)]
            self.mask = torch.cat([kv.left_pad(self.mask, width, dim=1), kv.left_pad(mask, width, dim=1)])
            self.next_pos = torch.cat([self.next_pos, next_pos])
            self.logits = torch.cat([self.logits, logits])
        self.cache = kv.from_tensors(layers)
        self.rows += [rows[i] for i in keep]
        return ended

    @torch.no_grad()
    def step(self) -> list[Row]:
        """Pick every row's next token, give it to the row, drop the rows that ended, and run the others one step.
        Returns the rows that ended. (Run a series of steps inside ``model.decoder_context()``: entering it costs
        more than a tiny model's step, and a context already entered is not entered again.)"""
        tokens = self._pick()  # (rows,)
        logprobs = self._logprobs(tokens)
        ended = [row for i, row in enumerate(self.rows) if row.take(int(tokens[i]), logprobs[i])]
        if ended:
            stay = [i for i, row in enumerate(self.rows) if row.finish is None]
            self._select(stay)
            tokens = tokens[stay]
        if not self.rows:
            return ended
        model = self.model
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(self.rows), 1)], dim=1)
        with model.decoder_context():
            out = model.model(inputs_embeds=model.embed(tokens[:, None]), attention_mask=self.mask,
                              position_ids=self.next_pos[:, None], cache=self.cache, use_cache=True)
        self.cache = out.cache
        self.logits = out.logits[:, -1].float()
        self.next_pos = self.next_pos + 1
        self.steps += 1
        return ended

    def _pick(self) -> torch.Tensor:
        """Rows sharing their parameters and generator are picked in one call (so a batch with one generator draws as
        one ``multinomial`` over the batch); each other row with its own."""
        tokens = torch.zeros(len(self.rows), dtype=torch.long, device=self.logits.device)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, row in enumerate(self.rows):
            groups.setdefault((id(row.params), id(row.generator)), []).append(i)
        for members in groups.values():
            row = self.rows[members[0]]
            index = torch.tensor(members, device=self.logits.device)
            tokens[index] = pick_tokens(self.logits.index_select(0, index), row.params, row.generator)
        return tokens.cpu()

    def _logprobs(self, tokens: torch.Tensor) -> list[Optional[TokenLogprob]]:
        out: list[Optional[TokenLogprob]] = [None] * len(self.rows)
        wanted = [i for i, row in enumerate(self.rows) if row.logprobs is not None]
        if not wanted:
            return out
        logp = self.logits[wanted].log_softmax(dim=-1).cpu()  # (wanted, vocab)
        for j, i in enumerate(wanted):
            k = min(self.rows[i].logprobs, logp.shape[-1])
            top = torch.topk(logp[j], k) if k else None
            alternatives = tuple(zip(top.indices.tolist(), top.values.tolist())) if top is not None else ()
            out[i] = TokenLogprob(int(tokens[i]), float(logp[j, tokens[i]]), alternatives)
        return out

    def _select(self, stay: list[int]) -> None:
        """Keep rows ``stay``; trim the columns only padding uses."""
        self.rows = [self.rows[i] for i in stay]
        if not stay:
            self.cache, self.mask = kv.new_cache(), self.mask[:0, :0]
            self.next_pos, self.logits = self.next_pos[:0], self.logits[:0]
            return
        index = torch.tensor(stay, device=self.mask.device)
        mask = self.mask.index_select(0, index)
        first = int(mask.any(dim=0).nonzero()[0])  # the first column a remaining row uses
        self.mask = mask[:, first:]
        self.cache = kv.from_tensors([(k.index_select(0, index)[:, :, first:], v.index_select(0, index)[:, :, first:])
                                      for k, v in kv.tensors(self.cache)])
        self.next_pos, self.logits = self.next_pos.index_select(0, index), self.logits.index_select(0, index)


def run(model: "CompressorBase", group: Prefilled, rows: Sequence[Row]) -> list[Row]:
    """Decode prefilled rows to the end (a :class:`Batch` that no row joins later); returns ``rows``."""
    batch = Batch(model)
    batch.join(group, rows)
    with model.decoder_context():  # entered once: switching adapters costs more than a tiny model's step
        while batch:
            batch.step()
    return list(rows)


@torch.no_grad()
def decode(model: "CompressorBase", inputs: dict[str, torch.Tensor], params: SamplingParams,
           generator: torch.Generator | None = None, cache=None) -> list[list[int]]:
    """The KV-cache loop over a left-padded decoder batch (inputs_embeds, attention_mask, position_ids): every row
    with ``params`` and the one ``generator``. Returns each row's new ids, the stop token excluded.

    ``cache``: keys/values of positions before ``inputs`` (see :func:`prefill`).
    """
    rows = [Row(params, generator) for _ in range(inputs["inputs_embeds"].shape[0])]
    window = model.args.model_max_length
    if params.max_new_tokens == 0 or window - int(inputs["attention_mask"].sum(dim=1).min()) + 1 <= 0:
        return [[] for _ in rows]  # nothing to generate for any row: no forward pass
    return [row.ids for row in run(model, prefill(model, inputs, cache), rows)]
