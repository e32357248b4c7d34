"""The vLLM backend: which settings it serves exactly (and the refusal of the rest), the decoder adapter in peft's
format (what vLLM loads) computing what the ICAE's decoder computes, and the slot service's cache. The parts that
need vLLM and a GPU are skipped elsewhere, with that reason; scripts/device/vllm_check.sh runs them on a GPU."""

import importlib.util

import pytest
import torch

from tests.conftest import TEXTS, make_model, small_config

GPU_REASON = None
if importlib.util.find_spec("vllm") is None:
    GPU_REASON = "vllm is not installed (it needs a GPU machine): run scripts/device/vllm_check.sh there"
elif not torch.cuda.is_available():
    GPU_REASON = "no GPU: the vLLM backend runs on GPUs only"


@pytest.mark.parametrize("overrides,ok", [
    (dict(layout="native", use_position_identifiers=True), False),
    (dict(layout="native", use_position_identifiers=False), True),
    (dict(layout="original", use_position_identifiers=True), True),  # original decodes at contiguous positions
    (dict(layout="native", use_position_identifiers=True, do_compress=False), True),
])
def test_servable_exactly_or_refused(overrides, ok):
    from icae.engines.vllm import servable

    problems = servable(small_config(**overrides).model)
    assert (problems == []) == ok, problems
    if not ok:
        assert "use_position_identifiers" in problems[0] and "0..n-1" in problems[0]


def test_peft_decoder_adapter_computes_the_decoder(tmp_path):
    from peft import PeftModel

    from icae.engines.vllm import write_peft_decoder_adapter
    from icae.models import load_base_model

    model = make_model(freeze_decoder=False, use_position_identifiers=False)
    out = write_peft_decoder_adapter(model, tmp_path / "adapter")
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    base, _ = load_base_model("tiny-qwen2")
    peft_model = PeftModel.from_pretrained(base, str(out)).eval()
    with torch.no_grad():
        memory = model.compress(TEXTS[:2])
        inputs = model.decoder_inputs(memory, "ae", None, model.tokenize(TEXTS[:2]))
        inputs.pop("labels")
        with model.decoder_context():
            ref = model.model(**inputs).logits
        got = peft_model(**inputs).logits
    assert torch.allclose(got, ref, atol=1e-5)
    with torch.no_grad(), peft_model.disable_adapter():
        bare = peft_model(**inputs).logits
    assert not torch.allclose(bare, ref, atol=1e-3)  # the adapter matters: the check above can fail


def test_frozen_decoder_has_no_adapter(tmp_path):
    from icae.engines.vllm import write_peft_decoder_adapter

    assert write_peft_decoder_adapter(make_model(freeze_decoder=True), tmp_path / "a") is None
    assert not (tmp_path / "a").exists()


def test_slot_service_caches_by_content_and_stays_bounded():
    from icae.engines.vllm import SlotService

    model = make_model(use_position_identifiers=False)
    rows = model.tokenize(TEXTS)
    service = SlotService(model, cache_mb=1.0)
    first = service([rows[0], rows[1], rows[0]])
    with torch.no_grad():
        ref = model.compress_for_spans([rows[0], rows[1]])
    assert torch.equal(first[0][0], ref.sample(0)[0]) and torch.equal(first[1][0], ref.sample(1)[0])
    assert first[2] is first[0] and (service.misses, service.hits) == (2, 1)
    service([rows[1]])
    assert (service.misses, service.hits) == (2, 2)
    one = first[0][0].numel() * 4
    small = SlotService(model, cache_mb=1.5 * one / 2**20)  # room for one observation's slots, not two
    small([rows[0]]), small([rows[1]])
    assert len(small.cache) == 1 and small.cache.bytes <= 1.5 * one


@pytest.mark.skipif(GPU_REASON is not None, reason=GPU_REASON or "")
def test_vllm_greedy_equals_pytorch(tmp_path):
    from icae.engines.vllm import VllmICAE

    overrides = dict(freeze_decoder=False, use_position_identifiers=False, fixed_mem_size=4)
    model = make_model("tiny-qwen2", **overrides)
    model.save_pretrained(tmp_path / "ckpt", small_config("tiny-qwen2", **overrides))
    engine = VllmICAE(tmp_path / "ckpt", tmp_path / "work", gpu_memory_utilization=0.3, enforce_eager=True)
    memory = engine.compress(TEXTS)
    prompts = model.tokenize(["# what does it do?\n"] * len(TEXTS))
    from icae.models import Memory

    on_cpu = Memory(memory.slots.cpu(), memory.mask.cpu(), memory.position_ids.cpu(), memory.context_lengths.cpu())
    with torch.no_grad():
        ref = model.generate(on_cpu, prompt_ids=prompts, mode="ft", max_new_tokens=16,
                             stop_token_ids=[])
    assert engine.generate(memory, prompt_ids=prompts, mode="ft", max_new_tokens=16, stop_token_ids=[]) == ref


class _FakeVllm:
    """What VllmICAE uses of vllm, computed by the PyTorch model: prompts of embeddings at positions 0..n-1 (as vLLM
    numbers them), greedy decoding, the stop token left in the output as vLLM leaves it in ``token_ids``."""

    class SamplingParams:
        def __init__(self, **kwargs):
            self.__dict__.update(kwargs)

    def __init__(self, model):
        self.model, self.calls = model, []

    def generate(self, prompts, params, lora_request=None, use_tqdm=True):
        from types import SimpleNamespace

        self.calls.append((len(prompts), lora_request, params))
        outs = []
        for prompt in prompts:
            embeds, ids = prompt["prompt_embeds"], []
            with torch.no_grad(), self.model.decoder_context():
                for _ in range(params.max_tokens):
                    pos = torch.arange(embeds.shape[0])[None]
                    t = int(self.model.model(inputs_embeds=embeds[None], position_ids=pos).logits[0, -1].argmax())
                    ids.append(t)
                    if t in params.stop_token_ids:
                        break
                    embeds = torch.cat([embeds, self.model.embed(torch.tensor([t]))])
            outs.append(SimpleNamespace(outputs=[SimpleNamespace(token_ids=ids)]))
        return outs


def test_vllm_engine_plumbing_equals_pytorch_over_a_stand_in(monkeypatch):
    """VllmICAE's rows, adapter, sampling translation and stop handling, with vLLM replaced by a stand-in that computes
    with the PyTorch model (the GPU test checks the real vLLM)."""
    import sys

    from icae.engines.vllm import SlotService, VllmICAE
    from icae.models import Span

    model = make_model(freeze_decoder=False, use_position_identifiers=False)
    fake = _FakeVllm(model)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    engine = VllmICAE.__new__(VllmICAE)
    engine.model, engine.tokenizer, engine.llm, engine.lora = model, model.tokenizer, fake, "decoder-lora"
    engine.slots = SlotService(model)
    memory = engine.compress(TEXTS)
    prompts = model.tokenize(["# q\n", "why?", "x = 1\n"])
    with torch.no_grad():
        ref = model.generate(memory, prompt_ids=prompts, mode="ft", max_new_tokens=5, stop_token_ids=[])
        stop = ref[0][2]
        cut = model.generate(memory, prompt_ids=prompts, mode="ft", max_new_tokens=5, stop_token_ids=[stop])
    assert engine.generate(memory, prompt_ids=prompts, mode="ft", max_new_tokens=5, stop_token_ids=[]) == ref
    assert engine.generate(memory, prompt_ids=prompts, mode="ft", max_new_tokens=5, stop_token_ids=[stop]) == cut
    n, lora, params = fake.calls[-1]
    assert (n, lora, params.temperature, params.stop_token_ids) == (3, "decoder-lora", 0.0, [stop])
    tok = model.tokenize
    rows = [[Span(tok(["user: look\n"])[0]), Span(tok([TEXTS[2]])[0], compress=True), Span(tok(["bot:"])[0])]] * 2
    with torch.no_grad():
        ref_spans, _ = model.generate_spans(rows[:1], cache={}, max_new_tokens=4, stop_token_ids=[])
    got, counts = engine.generate_spans(rows, max_new_tokens=4, stop_token_ids=[])
    assert got == ref_spans * 2 and counts == {"compressed": 1, "cache_hits": 1}
