"""In-context copying: does a language model repeat a span it read ``distance`` tokens earlier?

An agent's actions are copies (the path and line a search printed, the ``def`` line of a window, the summary the task
quotes), so a base that cannot copy cannot make an agent, whatever it is fine-tuned on. Each probe row is
``[span ; filler ; span]``, every piece held-out text; the model's argmax at each position of the second span is
compared with the next token (teacher-forced). The same span read the first time is the reference: what the model
predicts with nothing to copy. A model that copies scores the second reading far above the first.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class CopyScore:
    distance: int  # filler tokens between the two readings
    span: int  # tokens per span
    rows: int
    first_read: float  # share of the span's tokens 2..span predicted right the first time
    copy: float  # the same share the second time
    copy_whole_span: float  # share of rows whose second reading is right at every one of those tokens

    def to_dict(self) -> dict:
        return asdict(self)


def copy_rows(ids: list[int], distance: int, span: int, rows: int) -> torch.Tensor:
    """``(rows, 2 * span + distance)``: row r is ``[a ; filler ; a]`` cut from consecutive stretches of ``ids``."""
    stride = span + distance
    if len(ids) < rows * stride:
        raise ValueError(f"{rows} rows of span {span} and distance {distance} need {rows * stride} tokens, "
                         f"got {len(ids)}")
    out = []
    for r in range(rows):
        chunk = ids[r * stride:(r + 1) * stride]
        out.append(chunk + chunk[:span])
    return torch.tensor(out)


@torch.no_grad()
def copy_score(model, ids: list[int], distance: int, span: int = 24, rows: int = 40, batch: int = 8) -> CopyScore:
    """:class:`CopyScore` of ``model`` (a causal LM called as ``model(input_ids=...)``, returning ``.logits``)."""
    if span < 2 or distance < 0 or rows < 1:
        raise ValueError(f"need span >= 2, distance >= 0, rows >= 1; got {span}, {distance}, {rows}")
    x = copy_rows(ids, distance, span, rows)
    right = []
    for i in range(0, rows, batch):
        block = x[i:i + batch]
        device = getattr(model, "device", None)  # a Hugging Face model's; the rows are moved to it
        pred = model(input_ids=block if device is None else block.to(device)).logits.argmax(-1).cpu()  # (b, T): t -> t+1
        right.append(pred[:, :-1] == block[:, 1:])
    right = torch.cat(right)  # (rows, T - 1): right[:, t] is token t + 1 predicted right
    first = right[:, : span - 1]  # tokens 1..span-1 of the first reading
    second = right[:, span + distance:]  # tokens 1..span-1 of the second reading
    return CopyScore(distance, span, rows, first.float().mean().item(), second.float().mean().item(),
                     second.all(dim=1).float().mean().item())
