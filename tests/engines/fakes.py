"""Test doubles for the llama.cpp backend: its input side wired to a PyTorch ICAE's weights, and a runtime that
keeps llama.cpp's contract (sequences of cached inputs, each new input at the next index, adapters per pass, outputs
per flagged row) but computes with the PyTorch model, recomputing a sequence's whole history on each pass."""

from types import SimpleNamespace

import numpy as np
import torch

from icae.engines.llamacpp_runtime import RuntimeOptions


def engine_for(model, runtime=None):
    """A LlamaCppICAE whose token table, memory and special embeddings are ``model``'s (no GGUF, no llama.cpp)."""
    from icae.engines.llamacpp import LlamaCppICAE

    engine = LlamaCppICAE.__new__(LlamaCppICAE)
    table = model.base_causal_lm.get_input_embeddings().weight.detach().float().numpy()
    engine.args, engine.tokenizer, engine._frame = model.args, model.tokenizer, None
    engine.memory_embeddings = model.memory_embeddings.detach().float().numpy()
    engine.special_embeddings = model.special_embeddings.detach().float().numpy()
    engine.manifest = SimpleNamespace(special_names=model.special_names)
    engine.embed_ids = lambda ids: table[np.asarray(ids, dtype=np.int64).reshape(-1)]
    engine.vocab_size = model.vocab_size
    engine.runtime = runtime
    return engine


class TorchRuntime:
    """:class:`icae.engines.llamacpp_runtime.LlamaRuntime`'s interface over a PyTorch ICAE."""

    def __init__(self, model, n_seq_max: int = 4):
        self.model, self.options = model, RuntimeOptions(n_seq_max=n_seq_max, n_batch=7)  # small chunks on purpose
        self.adapters = {"encoder": 1, **({"decoder": 2} if model.has_decoder_adapter else {})}
        self.history = {s: [] for s in range(n_seq_max)}  # seq -> [(embedding (hidden,), position)]
        self._free = list(range(n_seq_max))
        self.adapter, self.embeddings, self.passes = None, False, 0

    def borrow(self, n):
        assert n <= len(self._free), "more sequences asked than free"
        taken, self._free = self._free[:n], self._free[n:]
        return taken

    def give_back(self, seqs):
        for s in seqs:
            assert s not in self._free, f"sequence {s} given back twice"
            self.forget(s)
            self._free.append(s)

    @property
    def free_sequences(self):
        return len(self._free)

    def copy(self, src, dst, until):
        self.history[dst] = list(self.history[src][:until])

    def forget(self, seq, start=0):
        del self.history[seq][start:]

    def use(self, adapter, embeddings):
        assert adapter in (None, *self.adapters), adapter
        self.adapter, self.embeddings = adapter, embeddings

    @torch.no_grad()
    def decode(self, embeds, index, positions, seqs, outputs):
        self.passes += 1
        flagged = []
        for i in range(len(embeds)):
            seq = int(seqs[i])
            assert int(index[i]) == len(self.history[seq]), "an input must take its sequence's next index"
            self.history[seq].append((np.asarray(embeds[i], dtype=np.float32), int(positions[i])))
            if outputs[i]:
                flagged.append((seq, len(self.history[seq]) - 1))
        results = []
        for seq, at in flagged:
            rows = self.history[seq][: at + 1]
            e = torch.from_numpy(np.stack([r[0] for r in rows]))[None]
            pos = torch.tensor([[r[1] for r in rows]])
            if self.embeddings:
                assert self.adapter == "encoder"
                results.append(self.model.backbone(inputs_embeds=e, position_ids=pos).last_hidden_state[0, -1])
            else:
                with self.model.decoder_context():
                    results.append(self.model.model(inputs_embeds=e, position_ids=pos).logits[0, -1])
        return torch.stack(results).float().numpy() if results else np.zeros((0, 1), np.float32)

    def sampler(self, temperature, top_k, top_p, seed):
        return np.random.default_rng(seed)

    def sample(self, rng, logits):
        p = np.exp(logits - logits.max())
        return int(rng.choice(len(p), p=p / p.sum()))

    def free_sampler(self, chain):
        pass

    def close(self):
        pass
