"""A tiny LM made to answer every assistant turn with one fixed reply: a stand-in for an agent model.

The tiny models are untrained for agent work, so tests of tool calling (and ``make agent-check``) serve a tiny Qwen2
overfit, in a few hundred CPU steps, to write ``REPLY[mode]`` after ``<|im_start|>assistant\\n`` whatever came before
(random tool outputs and user messages of random lengths, earlier replies): in ``tools`` mode a Hermes tool call of
mini-swe-agent's ``bash`` tool after a line of text, in ``text`` mode the fenced block mini-swe-agent's text-based mode
reads. What the server does with that text (rendering, parsing, streaming, compression) is what is tested; the
model only has to write it, token by token, through the real decoding loop.
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


def _noise(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))



def conversation(rng: random.Random, mode: str, turns: int) -> list[dict]:
    """An agent-like conversation whose assistant turns are all the reply (tool results as tool or user messages)."""
    messages = [{"role": "system", "content": "You are a coding agent. " + _noise(rng, 0, 20)},
                {"role": "user", "content": "Task: " + _noise(rng, 3, 40)}]
    for _ in range(turns):
        if mode == "tools":
            messages.append({"role": "assistant", "content": "Listing the sources.",
                             "tool_calls": [{"id": "c", "type": "function", "function": CALL}]})
            messages.append({"role": "tool", "content": _noise(rng, 0, 60)})
        else:
            messages.append({"role": "assistant", "content": REPLY["text"]})
            messages.append({"role": "user", "content": _noise(rng, 0, 60)})
    return messages


def train(out_dir: str | Path, mode: str, steps: int = 150, seed: int = 0) -> Path:
    """Write a tiny Qwen2 LM that answers ``REPLY[mode]`` (then ``<|im_end|>``) to ``out_dir``; returns it. ``mode``
    both: the tools reply when the prompt offers tools, else the text reply."""
    from transformers import AutoModelForCausalLM

    from icae.models.loading import build_tiny_model, tiny_tokenizer
    from icae.serve.render import TOOLS_TEMPLATE

    out_dir = Path(out_dir)
    if (out_dir / "standin.json").is_file():  # written last: a finished training
        return out_dir
    build_tiny_model("qwen2", out_dir, hidden_size=64, seed=seed)
    tokenizer = tiny_tokenizer()
    model = AutoModelForCausalLM.from_pretrained(out_dir)
    template = TOOLS_TEMPLATE.read_text()
    rng = random.Random(seed)
    end = tokenizer("<|im_end|>", add_special_tokens=False)["input_ids"]
    targets = {m: tokenizer(REPLY[m], add_special_tokens=False)["input_ids"] + end for m in REPLY}

    def example() -> tuple[list[int], list[int]]:
        kind = rng.choice(list(REPLY)) if mode == "both" else mode
        messages = conversation(rng, kind, rng.randint(0, 2))
        prompt = tokenizer.apply_chat_template(messages, tools=[BASH_TOOL] if kind == "tools" else None,
                                               tokenize=False, add_generation_prompt=True, chat_template=template)
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        return ids + targets[kind], [-100] * len(ids) + targets[kind]

    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(steps):
            rows = [example() for _ in range(8)]
            width = max(len(ids) for ids, _ in rows)
            ids = torch.tensor([r + [0] * (width - len(r)) for r, _ in rows])
            labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
            mask = (torch.arange(width)[None] < torch.tensor([len(r) for r, _ in rows])[:, None]).long()
            hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1]
            scored = labels[:, 1:] != -100  # logits only where the reply is learned: the vocabulary matmul is the cost
            loss = torch.nn.functional.cross_entropy(model.lm_head(hidden[scored]), labels[:, 1:][scored])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    model.save_pretrained(out_dir)
    (out_dir / "standin.json").write_text(json.dumps({"mode": mode, "steps": steps, "final_loss": float(loss.detach())}))
    return out_dir


if __name__ == "__main__":
    import sys
    import time

    began = time.perf_counter()
    path = train(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 300)
    print(path, (path / "standin.json").read_text(), f"{time.perf_counter() - began:.1f} s")
