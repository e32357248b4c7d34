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
    (dict(layout="seed", use_position_identifiers=True), True),  # seed decodes at contiguous positions
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
    assert len(small.cache) == 1 and small.bytes <= 1.5 * one


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
