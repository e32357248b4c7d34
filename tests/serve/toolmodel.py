"""A tiny LM made to answer every assistant turn with one fixed reply: a stand-in for an agent model.

The tiny models are untrained for agent work, so tests of tool calling (and ``make agent-check``) serve a tiny Qwen2
overfit, in a few hundred CPU steps, to write ``REPLY[mode]`` after ``<|im_start|>assistant\\n`` whatever came before
(system prompts, tasks and tool outputs of random tokens and lengths, earlier replies): in ``tools`` mode a Hermes tool call of
mini-swe-agent's ``bash`` tool after a line of text, in ``text`` mode the fenced block mini-swe-agent's text-based mode
reads. What the server does with that text (rendering, parsing, streaming, compression) is what is tested; the
model only has to write it, token by token, through the real decoding loop.

The committed model (tests/serve/assets/standin) was trained in stages on this machine's shared CPU, each continuing
the previous (``python -m tests.serve.toolmodel OUT both STEPS [INIT] [TURNS] [BATCH]``; its standin.json names the
last stage): 600 steps from scratch on random-token contexts (2 earlier turns at most), 300 adding calls begun by the
server and random slot vectors, 300 with slot-like vectors, then 200 (batch 4) and 400 (batch 8) with up to 10
earlier turns, as an agent's 10 steps have (about 45 min on the shared CPU in all). The builder reproduces a stand-in
of the same kind, not the same bits: the stages ran while it grew. It breaks down on contexts longer than it saw
(say, ten observations of 200 tokens each).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

COMMAND = "ls -la src"
CALL = {"name": "bash", "arguments": {"command": COMMAND}}
REPLY = {
    "tools": f"Listing the sources.\n<tool_call>\n{json.dumps(CALL)}\n</tool_call>",
    "text": f"Listing the sources.\n```mswea_bash_command\n{COMMAND}\n```",
}
BASH_TOOL = {"type": "function", "function": {
    "name": "bash", "description": "Execute a bash command",
    "parameters": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}}
WORDS = ("src", "def", "return", "import", "os", "path", "self", "value", "error", "test", "line", "file", "class",
         "total", "drwxr-xr-x", "user", "1024", "main.py", "README.md", "(", ")", ":", "=", "\n", "    ", "_", ".")


def _noise(rng: random.Random, low: int, high: int, vocab: list[str]) -> str:
    """Random text: code-like words and any of the tokenizer's tokens, so that no context is unfamiliar."""
    return " ".join(rng.choice(WORDS) if rng.random() < 0.5 else rng.choice(vocab)
                    for _ in range(rng.randint(low, high)))


SLOT = "<|pad|>"  # stands for one memory slot in training: its embedding is replaced by a random vector


def _observation(rng: random.Random, vocab: list[str]) -> str:
    """A tool output as text, or (half the time) as the memory slots a compressor would make of it."""
    return SLOT * rng.randint(4, 64) if rng.random() < 0.7 else _noise(rng, 0, 30, vocab)


def conversation(rng: random.Random, mode: str, turns: int, vocab: list[str]) -> list[dict]:
    """An agent-like conversation whose assistant turns are all the reply (tool results as tool or user messages)."""
    messages = [{"role": "system", "content": _noise(rng, 1, 30, vocab)},
                {"role": "user", "content": _noise(rng, 1, 40, vocab)}]
    for _ in range(turns):
        if mode == "tools":
            messages.append({"role": "assistant", "content": "Listing the sources.",
                             "tool_calls": [{"id": "c", "type": "function", "function": CALL}]})
            messages.append({"role": "tool", "content": _observation(rng, vocab)})
        else:
            messages.append({"role": "assistant", "content": REPLY["text"]})
            messages.append({"role": "user", "content": _observation(rng, vocab)})
    return messages


def random_slots(shape: tuple[int, int, int]) -> torch.Tensor:
    """Vectors like an ICAE's memory slots: final-normed hidden states (RMS about 1 per dimension, so norms near
    sqrt(hidden) rather than an embedding's), more or less alike within a row (a shared direction of random weight)."""
    rows, width, hidden = shape
    shared = torch.randn(rows, 1, hidden) * torch.rand(rows, 1, 1) * 1.5
    vectors = shared + torch.randn(rows, width, hidden)
    rms = vectors.pow(2).mean(-1, keepdim=True).sqrt()
    return vectors / rms * torch.empty(rows, 1, 1).uniform_(0.2, 1.5)


def train(out_dir: str | Path, mode: str, steps: int = 900, seed: int = 0, init: str | Path | None = None,
          turns: int = 2, batch: int = 8) -> Path:
    """Write a tiny Qwen2 LM that answers ``REPLY[mode]`` (then ``<|im_end|>``) to ``out_dir``; returns it. ``mode``
    both: the tools reply when the prompt offers tools, else the text reply. ``init``: continue from that model;
    ``turns``: earlier turns in a conversation, at most (agent runs: 10)."""
    from transformers import AutoModelForCausalLM

    from icae.models.loading import build_tiny_model, tiny_tokenizer
    from icae.serve.render import TOOLS_TEMPLATE

    out_dir = Path(out_dir)
    if (out_dir / "standin.json").is_file():  # written last: a finished training
        return out_dir
    build_tiny_model("qwen2", out_dir, hidden_size=64, seed=seed)
    tokenizer = tiny_tokenizer()
    model = AutoModelForCausalLM.from_pretrained(init or out_dir)
    template = TOOLS_TEMPLATE.read_text()
    rng = random.Random(seed)
    vocab = sorted(t for t in (tokenizer.decode([i]) for i in range(len(tokenizer))) if t.strip() and "<|" not in t)
    end = tokenizer("<|im_end|>", add_special_tokens=False)["input_ids"]
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    targets = {m: encode(REPLY[m]) + end for m in REPLY}
    call = REPLY["tools"][REPLY["tools"].index("<tool_call>"):]
    # tool_choice required / named: the server writes the call's beginning (tokenised alone) and the model the rest
    begun = [('<tool_call>\n{"name": "', call[len('<tool_call>\n{"name": "'):]),
             ('<tool_call>\n{"name": "bash", "arguments": ', call[len('<tool_call>\n{"name": "bash", "arguments": '):])]

    def example() -> tuple[list[int], list[int]]:
        kind = rng.choice(list(REPLY)) if mode == "both" else mode
        messages = conversation(rng, kind, rng.randint(0, turns), vocab)
        prompt = tokenizer.apply_chat_template(messages, tools=[BASH_TOOL] if kind == "tools" else None,
                                               tokenize=False, add_generation_prompt=True, chat_template=template)
        ids = encode(prompt)
        if kind == "tools" and rng.random() < 0.25:
            written, rest = rng.choice(begun)
            ids, target = ids + encode(written), encode(rest) + end
            return ids + target, [-100] * len(ids) + target
        return ids + targets[kind], [-100] * len(ids) + targets[kind]

    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(steps):
            rows = [example() for _ in range(batch)]
            width = max(len(ids) for ids, _ in rows)
            ids = torch.tensor([r + [0] * (width - len(r)) for r, _ in rows])
            labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
            mask = (torch.arange(width)[None] < torch.tensor([len(r) for r, _ in rows])[:, None]).long()
            embeds = model.model.embed_tokens(ids)
            slots = ids == tokenizer.convert_tokens_to_ids(SLOT)
            embeds = torch.where(slots[..., None], random_slots(embeds.shape), embeds)
            steps_ = torch.where(slots, torch.randint(1, 5, slots.shape), torch.ones_like(ids))  # position gaps
            positions = torch.cumsum(steps_, dim=1) - 1
            hidden = model.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).last_hidden_state
            hidden = hidden[:, :-1]
            scored = labels[:, 1:] != -100  # logits only where the reply is learned: the vocabulary matmul is the cost
            loss = torch.nn.functional.cross_entropy(model.lm_head(hidden[scored]), labels[:, 1:][scored])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    model.save_pretrained(out_dir)
    (out_dir / "standin.json").write_text(json.dumps({"mode": mode, "steps": steps, "init": str(init) if init else None, "turns": turns,
                                                     "final_loss": float(loss.detach())}))
    return out_dir


if __name__ == "__main__":
    import sys
    import time

    began = time.perf_counter()
    path = train(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 900,
                 init=sys.argv[4] if len(sys.argv) > 4 and sys.argv[4] != "-" else None,
                 turns=int(sys.argv[5]) if len(sys.argv) > 5 else 2, batch=int(sys.argv[6]) if len(sys.argv) > 6 else 8)
    print(path, (path / "standin.json").read_text(), f"{time.perf_counter() - began:.1f} s")
