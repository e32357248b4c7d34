import pytest
import torch

from icae import SimpleLLM, load_checkpoint
from tests.conftest import TEXTS, make_model, pad_batch


def test_memory_is_the_context_itself(family):
    model = make_model(family, model_type="llm")
    rows = [[10, 11, 12], [13, 14, 15, 16, 17]]
    mem = model.compress(rows)
    assert mem.num_slots.tolist() == [3, 5]
    torch.testing.assert_close(mem.slots[1], model.embed(torch.tensor(rows[1])))


def test_full_context_layout_equals_plain_causal_lm():
    """[context][prompt][target] through SimpleLLM scores exactly like the causal LM on the concatenated ids."""
    model = make_model(model_type="llm")
    context, prompt, target = [10, 11, 12, 13], [20, 21], [30, 31, 32]
    out = model([context], mode="ft", prompt_ids=[prompt], target_ids=[target])
    with torch.no_grad():
        ref = model.model(input_ids=torch.tensor([context + prompt + target])).logits
    torch.testing.assert_close(out.logits[0], ref[0, -4:], atol=1e-5, rtol=1e-5)


def test_only_lora_trains_and_base_is_unchanged(family):
    model = make_model(family, model_type="llm").train()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        loss = model(TEXTS, mode="ae").loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)


def test_without_lora_the_base_weights_train():
    model = make_model(model_type="llm", use_lora=False).train()
    assert all(p.requires_grad for p in model.parameters())
    assert all(k.startswith("base.") for k in model.trainable_state_dict())


@pytest.mark.parametrize("side", ["left", "right"])
def test_batch_equals_single(family, side):
    model = make_model(family, model_type="llm")
    rows = [model.tokenize([t])[0].tolist() for t in TEXTS]
    ids, mask = pad_batch(rows, side, model.tokenizer.pad_token_id)
    batch = model.generate(model.compress(ids, mask), mode="ft", max_new_tokens=5)
    for i, row in enumerate(rows):
        assert batch[i] == model.generate(model.compress([row]), mode="ft", max_new_tokens=5)[0]


def test_overfits_one_text(family):
    torch.manual_seed(0)
    model = make_model(family, model_type="llm").train()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.zero_()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    first = None
    for _ in range(100):
        loss = model([TEXTS[0]], mode="ft", prompt_ids=[[20]], target_ids=[[30, 31, 32, 33, 34, 35]]).loss
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1 * first


@pytest.mark.parametrize("use_lora", [True, False])
def test_save_load_round_trip(tmp_path, use_lora):
    model = make_model(model_type="llm", use_lora=use_lora)
    if not use_lora:
        with torch.no_grad():
            model.model.get_input_embeddings().weight.mul_(1.5)
    model.save_pretrained(tmp_path / "ckpt")
    loaded = SimpleLLM.from_pretrained(tmp_path / "ckpt").eval()
    mem = model.compress(TEXTS)
    torch.testing.assert_close(loaded.compress(TEXTS).slots, mem.slots, atol=0, rtol=0)
    assert loaded.generate(mem, mode="ft", max_new_tokens=5) == model.generate(mem, mode="ft", max_new_tokens=5)
    with pytest.raises(TypeError, match="holds a model_type 'llm' checkpoint, not ICAE"):
        from icae import ICAE

        ICAE.from_pretrained(tmp_path / "ckpt")
    assert isinstance(load_checkpoint(tmp_path / "ckpt"), SimpleLLM)
