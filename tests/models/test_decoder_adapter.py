"""freeze_decoder: false: a second LoRA adapter on the same base weights, active only while decoding."""

import pytest
import torch

from icae import ICAE, load_checkpoint
from icae.models import load_trained_tensors
from tests.conftest import TEXTS, make_model


def decoder_model(family="tiny-qwen2", **overrides):
    return make_model(family, freeze_decoder=False, **overrides)


def lora_params(model, adapter):
    return {n: p for n, p in model.named_parameters() if f".{adapter}." in n and "lora_" in n}


def decoder_logits(model, memory):
    inputs = model.decoder_inputs(memory, "ft", [torch.tensor([5, 6, 7])] * len(memory), None)
    inputs.pop("labels")
    with torch.no_grad(), model.decoder_context():
        return model.model(**inputs).logits


def test_both_adapters_receive_gradients(family):
    model = decoder_model(family).train()
    encoder, decoder = lora_params(model, "default"), lora_params(model, "decoder")
    assert encoder.keys() and len(encoder) == len(decoder)
    assert all(p.requires_grad for p in [*encoder.values(), *decoder.values()])
    model(TEXTS[:2], mode="ae").loss.backward()
    for name, p in {**encoder, **decoder}.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_one_copy_of_the_base_weights():
    frozen, adapted = make_model(), decoder_model()
    base = lambda m: {n: p for n, p in m.named_parameters() if "lora_" not in n and "embeddings" not in n}  # noqa: E731
    assert base(frozen).keys() == base(adapted).keys()
    assert sum(p.numel() for p in base(adapted).values()) == sum(p.numel() for p in base(frozen).values())


def test_decoder_adapter_is_off_while_encoding_and_on_while_decoding(family):
    model = decoder_model(family)
    memory = model.compress(TEXTS[:2])
    logits = decoder_logits(model, memory)
    with torch.no_grad():  # change only the decoder adapter
        for p in lora_params(model, "decoder").values():
            p.add_(0.1)
    torch.testing.assert_close(model.compress(TEXTS[:2]).slots, memory.slots, atol=0, rtol=0)  # encoder untouched
    assert not torch.allclose(decoder_logits(model, memory), logits)  # the decoder reads its adapter
    changed = decoder_logits(model, memory)
    with torch.no_grad():  # change only the encoder adapter: the decoder, on the same memory, is untouched
        for p in lora_params(model, "default").values():
            p.add_(0.1)
    torch.testing.assert_close(decoder_logits(model, memory), changed, atol=0, rtol=0)
    assert not torch.allclose(model.compress(TEXTS[:2]).slots, memory.slots)


def test_a_zero_decoder_adapter_decodes_like_the_frozen_base():
    model = decoder_model()
    with torch.no_grad():
        for name, p in lora_params(model, "decoder").items():
            if "lora_B" in name:
                p.zero_()
    memory = model.compress(TEXTS[:1])
    inputs = model.decoder_inputs(memory, "ft", [torch.tensor([5, 6, 7])], None)
    inputs.pop("labels")
    with torch.no_grad(), model.model.disable_adapter():
        raw = model.model(**inputs).logits
    torch.testing.assert_close(decoder_logits(model, memory), raw)


def test_freeze_encoder_trains_the_decoder_side_only():
    model = decoder_model(freeze_encoder=True).train()
    assert not any(p.requires_grad for p in lora_params(model, "default").values())
    model(TEXTS[:2], mode="ae").loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora_params(model, "decoder").values())
    assert model.special_embeddings.grad is not None


@pytest.mark.parametrize("name", ["tiny-qwen2", "tiny-mistral"])
def test_save_load_restores_both_adapters_bit_for_bit(name, tmp_path):
    model = decoder_model(name, use_position_identifiers=True)
    model.save_pretrained(tmp_path / "ckpt")
    saved = load_trained_tensors(tmp_path / "ckpt")
    assert any(k.startswith("decoder_lora.") for k in saved) and any(k.startswith("lora.") for k in saved)
    loaded = ICAE.from_pretrained(tmp_path / "ckpt").eval()
    for key, value in loaded.trainable_state_dict().items():
        assert torch.equal(value, saved[key]), key
    memory = model.compress(TEXTS)
    torch.testing.assert_close(loaded.compress(TEXTS).slots, memory.slots, atol=0, rtol=0)
    torch.testing.assert_close(decoder_logits(loaded, memory), decoder_logits(model, memory), atol=0, rtol=0)
    assert loaded.generate(memory, mode="ae", max_new_tokens=6) == model.generate(memory, mode="ae", max_new_tokens=6)


def test_a_decoder_adapter_checkpoint_needs_freeze_decoder_false(tmp_path):
    decoder_model().save_pretrained(tmp_path / "ckpt")
    with pytest.raises(ValueError, match="freeze_decoder=False"):
        make_model().load_trainable_state_dict(load_trained_tensors(tmp_path / "ckpt"))
    make_model().save_pretrained(tmp_path / "plain")
    with pytest.raises(ValueError, match="freeze_decoder=True"):
        decoder_model().load_trainable_state_dict(load_trained_tensors(tmp_path / "plain"))
    assert not load_checkpoint(tmp_path / "ckpt").args.freeze_decoder  # the saved config says so


@pytest.mark.parametrize("name", ["tiny-qwen2", "tiny-mistral"])
def test_batch_equals_single_with_a_decoder_adapter(name):
    model = decoder_model(name, use_position_identifiers=True)
    rows = [model.tokenize([t])[0] for t in TEXTS]
    memory = model.compress(rows)
    batch_out = model(rows, mode="ae")
    batch_gen = model.generate(memory, [[20, 21]] * 3, mode="ft", max_new_tokens=5)
    for i, row in enumerate(rows):
        alone = model([row], mode="ae")
        k = alone.logits.shape[1]
        torch.testing.assert_close(batch_out.logits[i, -k:], alone.logits[0], atol=1e-4, rtol=1e-4)
        assert batch_gen[i] == model.generate(model.compress([row]), [[20, 21]], mode="ft", max_new_tokens=5)[0]


def test_gradient_checkpointing_keeps_each_pass_in_its_adapter():
    grads = []
    for checkpointing in (False, True):
        model = decoder_model(fixed_mem_size=8).train()
        if checkpointing:
            model.gradient_checkpointing_enable()
        model(TEXTS, mode="ae").loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert any(".decoder." in n for n in grads[0]) and grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], atol=1e-5, rtol=1e-4)


def test_simple_llm_accepts_either_value():
    for value in (True, False):
        model = make_model(model_type="llm", freeze_decoder=value).train()
        assert any(p.requires_grad for n, p in model.named_parameters() if "lora_" in n)
