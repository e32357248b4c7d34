import pytest
import torch

from icae import ICAE, CheckpointError, Memory, load_checkpoint
from icae.models.segments import memory_position_ids
from tests.conftest import TEXTS, make_model, pad_batch


def test_memory_shapes_follow_segment_arithmetic(family):
    model = make_model(family)
    rows = [list(range(10, 10 + n)) for n in (5, 16, 17, 40)]
    mem = model.compress(rows)
    # k=4, rate 4 -> 16 tokens per segment at most: 1, 1, 2, 3 segments
    assert mem.num_slots.tolist() == [4, 4, 8, 12]
    assert mem.slots.shape == (4, 12, model.hidden_size)
    assert mem.context_lengths.tolist() == [5, 16, 17, 40]
    assert torch.all(mem.slots[0, 4:] == 0)


def test_compress_accepts_texts_and_ids_alike():
    model = make_model()
    by_text = model.compress(TEXTS[:2])
    by_ids = model.compress([model.tokenizer(t, add_special_tokens=False)["input_ids"] for t in TEXTS[:2]])
    torch.testing.assert_close(by_text.slots, by_ids.slots)


def test_position_identifiers_in_encoder_memory(family):
    model = make_model(family, use_position_identifiers=True)
    mem = model.compress([list(range(10, 43))])  # 33 tokens -> segments 11, 11, 11 at 1..11, 12..22, 23..33
    expected = torch.cat([memory_position_ids(1, 11, 4), memory_position_ids(12, 22, 4), memory_position_ids(23, 33, 4)])
    assert mem.position_ids[0].tolist() == expected.tolist()


def test_decoder_layouts_labels_and_positions():
    model = make_model(use_position_identifiers=True)
    context = torch.arange(10, 43)  # 33 tokens -> 12 slots
    mem = model.compress([context])
    ae = model.decoder_inputs(mem, "ae", None, [torch.tensor([7, 8, 9])])
    # [12 slots][AE][7 8 9]: slots keep their ids, AE at 0, reconstruction at 1, 2, 3
    assert ae["position_ids"][0].tolist() == mem.position_ids[0].tolist() + [0, 1, 2, 3]
    assert ae["labels"][0].tolist() == [-100] * 13 + [7, 8, 9]
    ft = model.decoder_inputs(mem, "ft", [torch.tensor([5, 6])], [torch.tensor([7])])
    # [12 slots][FT][5 6][7]: after the slots, positions continue from L + 1 = 34
    assert ft["position_ids"][0, 12:].tolist() == [34, 35, 36, 37]
    assert ft["labels"][0].tolist() == [-100] * 15 + [7]
    plain = make_model().decoder_inputs(make_model().compress([context]), "ft", [torch.tensor([5, 6])], [torch.tensor([7])])
    assert plain["position_ids"][0].tolist() == list(range(16))


def test_ae_targets_are_context_then_eos():
    model = make_model()
    out = model([[11, 12, 13]], mode="ae")
    eos = model.tokenizer.eos_token_id
    # logits[:, i] predicts labels[:, i + 1]; the first kept position is the AE token.
    assert out.labels[0].tolist() == [-100, 11, 12, 13, eos]
    assert out.logits.shape[:2] == (1, 5)


def test_only_lora_and_new_embeddings_train(family):
    model = make_model(family).train()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(("lora_" in n) or n in {"memory_embeddings", "special_embeddings"} for n in trainable)
    out = model(TEXTS[:2], mode="ae")
    out.loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert "memory_embeddings" in with_grad and "special_embeddings" in with_grad
    assert any("lora_A" in n for n in with_grad) and any("lora_B" in n for n in with_grad)
    assert with_grad <= trainable


def test_ft_mode_trains_the_ft_token_not_the_others():
    model = make_model().train()
    out = model([TEXTS[0]], mode="ft", prompt_ids=[[20, 21]], target_ids=[[22, 23]])
    out.loss.backward()
    g = model.special_embeddings.grad.abs().sum(dim=1)
    assert g[2] > 0 and g[0] == 0 and g[1] == 0  # order: AE, LM, FT


def test_base_weights_unchanged_after_training(family):
    model = make_model(family).train()
    before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trained_before = model.memory_embeddings.detach().clone()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        loss = model(TEXTS, mode="ae").loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    for n, p in model.named_parameters():
        if n in before:
            assert torch.equal(p, before[n]), n
    assert not torch.equal(model.memory_embeddings, trained_before)


def test_decoder_runs_without_adapter():
    """The decoder is the base model itself: same logits as the raw base model on the same input embeddings."""
    model = make_model()
    mem = model.compress([TEXTS[0]])
    inputs = model.decoder_inputs(mem, "ft", [torch.tensor([5, 6])], None)
    inputs.pop("labels")
    with torch.no_grad():
        with model.decoder_context():
            decoded = model.model(**inputs).logits
        adapter_on = model.model(**inputs).logits
        base = model.base_causal_lm
        with model.model.disable_adapter():
            raw = base(**inputs).logits
    torch.testing.assert_close(decoded, raw)
    assert not torch.allclose(decoded, adapter_on)


@pytest.mark.parametrize("side", ["left", "right"])
def test_batch_equals_single(family, side):
    model = make_model(family, use_position_identifiers=True)
    rows = [model.tokenize([t])[0].tolist() for t in TEXTS]
    ids, mask = pad_batch(rows, side, model.tokenizer.pad_token_id)
    mem = model.compress(ids, attention_mask=mask)
    prompts = [[20, 21, 22], [23], [24, 25]]
    p_ids, p_mask = pad_batch(prompts, side, model.tokenizer.pad_token_id)
    batch_gen = model.generate(mem, p_ids, p_mask, mode="ft", max_new_tokens=6)
    batch_loss = model(ids, mask, mode="ae")
    for i, row in enumerate(rows):
        single = model.compress([row])
        n = int(single.num_slots[0])
        torch.testing.assert_close(mem.slots[i, :n], single.slots[0], atol=1e-5, rtol=1e-4)
        assert batch_gen[i] == model.generate(single, [prompts[i]], mode="ft", max_new_tokens=6)[0]
        alone = model([row], mode="ae")
        k = alone.logits.shape[1]
        torch.testing.assert_close(batch_loss.logits[i, -k:], alone.logits[0], atol=1e-4, rtol=1e-4)


def test_kv_cache_generation_matches_full_recompute(family):
    model = make_model(family)
    mem = model.compress([TEXTS[2]])
    cached = model.generate(mem, [[30, 31]], mode="ft", max_new_tokens=8, stop_token_ids=[])
    assert len(cached) == 1 and len(cached[0]) == 8
    # Greedy decoding without a cache: recompute the whole sequence for each new token.
    produced = []
    with torch.no_grad():
        for _ in range(8):
            inputs = model.decoder_inputs(mem, "ft", [torch.tensor([30, 31] + produced)], None)
            inputs.pop("labels")
            with model.decoder_context():
                logits = model.model(**inputs).logits
            produced.append(int(logits[0, -1].argmax()))
    assert cached[0] == produced


def test_generation_stops_and_samples_reproducibly():
    model = make_model()
    mem = model.compress(TEXTS[:2])
    free = model.generate(mem, mode="ae", max_new_tokens=5, stop_token_ids=[])
    assert [len(x) for x in free] == [5, 5]
    stop = free[0][2]
    stopped = model.generate(mem.select([0]), mode="ae", max_new_tokens=5, stop_token_ids=[stop])
    assert stop not in stopped[0] and len(stopped[0]) <= 2
    assert model.generate(mem, mode="ae", max_new_tokens=0) == [[], []]
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    s1 = model.generate(mem, mode="ae", max_new_tokens=6, do_sample=True, top_k=50, top_p=0.9, generator=g1)
    s2 = model.generate(mem, mode="ae", max_new_tokens=6, do_sample=True, top_k=50, top_p=0.9, generator=g2)
    assert s1 == s2
    one = model.generate(mem, mode="ae", max_new_tokens=4, do_sample=True, top_k=1, stop_token_ids=[])
    assert one == model.generate(mem, mode="ae", max_new_tokens=4, stop_token_ids=[])  # top_k=1 is greedy


def test_save_load_round_trip(family, tmp_path):
    model = make_model(family, use_position_identifiers=True, fixed_mem_size=8)
    with torch.no_grad():
        model.memory_embeddings.add_(0.1)
    model.save_pretrained(tmp_path / "ckpt")
    files = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert files == ["icae_config.yaml", "icae_meta.json", "model.safetensors"]
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "ckpt" / "model.safetensors"))
    assert set(saved) == set(model.trainable_state_dict())
    base_params = sum(p.numel() for p in model.base_causal_lm.parameters() if not p.requires_grad)
    assert sum(v.numel() for v in saved.values()) < base_params  # only what was trained
    loaded = ICAE.from_pretrained(tmp_path / "ckpt").eval()
    assert loaded.args.use_position_identifiers and loaded.args.fixed_mem_size == 8
    torch.testing.assert_close(loaded.compress(TEXTS).slots, model.compress(TEXTS).slots, atol=0, rtol=0)
    mem = model.compress(TEXTS)
    assert loaded.generate(mem, mode="ae", max_new_tokens=5) == model.generate(mem, mode="ae", max_new_tokens=5)


def test_loading_a_mismatched_checkpoint_fails_clearly(tmp_path):
    make_model(fixed_mem_size=8).save_pretrained(tmp_path / "k8")
    other = make_model(fixed_mem_size=4)
    from icae.models import load_trained_tensors

    with pytest.raises(ValueError, match="memory_embeddings"):
        other.load_trainable_state_dict(load_trained_tensors(tmp_path / "k8"))
    with pytest.raises(CheckpointError, match="not an icae checkpoint"):
        load_checkpoint(tmp_path / "nowhere")


def test_restore_from_loads_trained_tensors(tmp_path):
    model = make_model()
    model.save_pretrained(tmp_path / "ckpt")
    restored = make_model(restore_from=str(tmp_path / "ckpt"), seed=123)  # make_model re-randomises lora_B...
    assert torch.equal(restored.memory_embeddings, model.memory_embeddings)


def test_overfits_one_text(family):
    torch.manual_seed(0)
    model = make_model(family, fixed_mem_size=16).train()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.zero_()
    text = TEXTS[0]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    first = None
    for _ in range(200):
        loss = model([text], mode="ae").loss
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1 * first
    model.eval()
    assert model.reconstruct([text]) == [text]


def test_do_compress_false_feeds_tokens():
    model = make_model(do_compress=False)
    mem = model.compress([[10, 11, 12, 13, 14, 15]])
    assert mem.num_slots.tolist() == [6]
    torch.testing.assert_close(mem.slots[0], model.embed(torch.tensor([10, 11, 12, 13, 14, 15])))


def test_bad_inputs_fail_clearly():
    model = make_model()
    with pytest.raises(ValueError, match=r"sample\(s\) \[1\] have no tokens"):
        model.compress([[1, 2], []])
    with pytest.raises(ValueError, match="mode"):
        model.decoder_inputs(model.compress([[1, 2]]), "qa")
    with pytest.raises(ValueError, match="needs target_ids"):
        model([[1, 2]], mode="ft")
    with pytest.raises(ValueError, match="lora_target_modules"):
        make_model(lora_target_modules=["query_key_value"])
    with pytest.raises(ValueError, match="attention_mask shape"):
        model.compress(torch.ones(2, 3, dtype=torch.long), attention_mask=torch.ones(2, 4, dtype=torch.long))


def test_memory_select_and_padding():
    model = make_model()
    mem = model.compress([list(range(10, 15)), list(range(10, 50))])
    sub = mem.select([0])
    assert isinstance(sub, Memory) and sub.slots.shape == (1, 4, model.hidden_size)
    torch.testing.assert_close(sub.slots[0], mem.slots[0, :4])


def test_gradient_checkpointing_gives_the_same_gradients():
    grads = []
    for checkpointing in (False, True):
        model = make_model(fixed_mem_size=8).train()
        if checkpointing:
            model.gradient_checkpointing_enable()
        model(TEXTS, mode="ae").loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 2
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], atol=1e-5, rtol=1e-4)


def test_bfloat16_base_runs_and_keeps_float32_trained_embeddings():
    model = make_model(torch_dtype="bfloat16").train()
    assert model.dtype == torch.bfloat16 and model.memory_embeddings.dtype == torch.float32
    out = model(TEXTS[:2], mode="ae")
    out.loss.backward()
    assert torch.isfinite(out.loss) and model.memory_embeddings.grad is not None


def test_inference_mode_freezes_everything():
    model = make_model(train=False)
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_model_max_length_is_enforced():
    model = make_model(model_max_length=16)
    with pytest.raises(ValueError, match="exceeds model_max_length=16"):
        model([list(range(10, 40))], mode="ae")  # 8 slots + AE + 31 targets


def test_short_contexts_stay_uncompressed():
    model = make_model(min_tokens_to_compress=10)
    short, long = list(range(10, 16)), list(range(10, 40))
    mem = model.compress([short, long])
    assert mem.num_slots.tolist() == [6, 8]  # 6 tokens kept as they are; 30 tokens -> 2 segments of 4 slots
    torch.testing.assert_close(mem.sample(0)[0], model.embed(torch.tensor(short)))
    alone = make_model().compress([long])
    torch.testing.assert_close(mem.sample(1)[0], alone.sample(0)[0], atol=1e-5, rtol=1e-4)
