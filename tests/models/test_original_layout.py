"""layout: original reproduces the original tool: its checkpoint file loads, and slots and decoder inputs equal a short
independent re-statement of its compress loop and prompt building (written here from its description)."""

import math

import pytest
import torch
from safetensors.torch import save_file

from icae.models import build_model
from icae.models.loading import load_base_model
from icae.models.original import chat_frame, original_memory_positions, original_segments
from tests.conftest import small_config

K, RATE = 4, 2


def original_checkpoint(name, path, decoder: bool, seed=0):
    """A file with the original's key layout, from a peft model built here (random LoRA B, random memory tokens)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    base, tok = load_base_model(name)
    config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    encoder = get_peft_model(base, config)
    with torch.no_grad():
        for n, p in encoder.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    state = {f"icae.{k}": v.clone() for k, v in encoder.state_dict().items()}
    table = state["icae.base_model.model.model.embed_tokens.weight"]
    state["icae.base_model.model.model.embed_tokens.weight"] = torch.cat([table, torch.randn(K + 3, table.shape[1])])
    state.pop("icae.base_model.model.lm_head.weight", None)  # tied: left out, as the original does
    memory_token_embed = torch.randn(K + 3, table.shape[1]) * 0.5
    state["memory_token_embed.weight"] = memory_token_embed
    dec = None
    if decoder:
        dec_base, _ = load_base_model(name)
        dec = get_peft_model(dec_base, config)
        with torch.no_grad():
            for n, p in dec.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.05)
        state.update({f"decoder.{k}": v.clone() for k, v in dec.state_dict().items() if "lm_head" not in k})
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return encoder.eval(), dec, memory_token_embed, tok


def original_frame(tok):
    """The original's TemplateManager: render {{content}} with the generation prompt, split, split at the header."""
    full = tok.apply_chat_template([{"role": "user", "content": "{{content}}"}], tokenize=False,
                                   add_generation_prompt=True, enable_thinking=False)
    prefix, rest = full.split("{{content}}")
    suffix, think = rest.split("<|im_start|>assistant\n", 1)
    enc = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
    return enc(prefix), enc(suffix), enc("<|im_start|>assistant\n" + think)


@torch.no_grad()
def original_compress(encoder, memory_token_embed, ids: list[int], identifiers: bool) -> torch.Tensor:
    """The original's _compress: ceil(L/n)-token segments, each [tokens; k memory tokens] alone through the encoder."""
    total = len(ids)
    n = math.ceil(total / (K * RATE))
    size = math.ceil(total / n)
    body = encoder.get_base_model().model
    out = []
    for s in range(n):
        seg = torch.tensor(ids[s * size: min((s + 1) * size, total)])
        embeds = torch.cat([body.embed_tokens(seg), memory_token_embed[:K]])[None]
        kwargs = {}
        if identifiers:
            length = seg.numel()
            kwargs["position_ids"] = torch.cat([torch.arange(1, length + 1),
                                                torch.linspace(1, length, K).long()])[None]
        out.append(body(inputs_embeds=embeds, **kwargs).last_hidden_state[0, -K:])
    return torch.cat(out)


@pytest.mark.parametrize("identifiers", [True, False])
@pytest.mark.parametrize("name", ["tiny-qwen2", "tiny-mistral"])
def test_original_checkpoint_loads_and_compresses_as_the_original(name, identifiers, tmp_path):
    encoder, _, memory_token_embed, tok = original_checkpoint(name, tmp_path / "model.safetensors", decoder=False)
    model = build_model(small_config(name, layout="original", fixed_mem_size=K, mean_compression_rate=RATE,
                                     lora_target_modules=["q_proj", "v_proj"], use_position_identifiers=identifiers,
                                     restore_from=str(tmp_path / "model.safetensors"))).eval()
    torch.testing.assert_close(model.memory_embeddings, memory_token_embed[:K])
    torch.testing.assert_close(model.special_embeddings, memory_token_embed[K:])
    prefix, suffix, assistant = original_frame(tok)
    for length in (9, 23):  # framed lengths cross segment boundaries differently
        ids = list(range(40, 40 + length))
        expected = original_compress(encoder, memory_token_embed, prefix + ids + suffix + assistant, identifiers)
        torch.testing.assert_close(model.compress([ids]).slots[0], expected, atol=1e-5, rtol=1e-4)


def test_original_decoder_prompts_are_the_originals(tmp_path):
    encoder, _, memory_token_embed, tok = original_checkpoint("tiny-qwen2", tmp_path / "m.safetensors", decoder=False)
    model = build_model(small_config("tiny-qwen2", layout="original", fixed_mem_size=K, mean_compression_rate=RATE,
                                     lora_target_modules=["q_proj", "v_proj"],
                                     restore_from=str(tmp_path / "m.safetensors"))).eval()
    prefix, suffix, assistant = original_frame(tok)
    ids = list(range(40, 52))
    memory = model.compress([ids])
    slots = memory.slots[0, : int(memory.num_slots[0])]
    embed = encoder.get_base_model().model.embed_tokens
    # AE: <user_prefix> [memory] <suffix> <assistant_prefix>, then the context and the end of turn; no AE token.
    inputs = model.decoder_inputs(memory, "ae", None, [torch.tensor(ids + suffix)])
    expected = torch.cat([embed(torch.tensor(prefix)), slots, embed(torch.tensor(suffix + assistant + ids + suffix))])
    torch.testing.assert_close(inputs["inputs_embeds"][0], expected)
    assert inputs["position_ids"][0].tolist() == list(range(expected.shape[0]))  # contiguous decoder positions
    # The default AE target is the context and the end of turn, as the original's create_answer_with_suffix.
    out = model([ids], mode="ae")
    assert out.labels[0][out.labels[0] != -100].tolist() == ids + suffix
    # RepoQA: <user_prefix> instruction [memory] description + instruction <suffix> <assistant_prefix>.
    inputs = model.decoder_inputs(memory, "ft", [torch.tensor([7, 8])], None, [torch.tensor([5, 6])])
    expected = torch.cat([embed(torch.tensor(prefix + [5, 6])), slots, embed(torch.tensor([7, 8] + suffix + assistant))])
    torch.testing.assert_close(inputs["inputs_embeds"][0], expected)


def test_the_original_decoder_adapter_loads_and_decodes(tmp_path):
    _, decoder, memory_token_embed, tok = original_checkpoint("tiny-qwen2", tmp_path / "d.safetensors", decoder=True)
    model = build_model(small_config("tiny-qwen2", layout="original", fixed_mem_size=K, mean_compression_rate=RATE,
                                     lora_target_modules=["q_proj", "v_proj"], freeze_decoder=False,
                                     restore_from=str(tmp_path / "d.safetensors"))).eval()
    memory = model.compress([list(range(40, 52))])
    inputs = model.decoder_inputs(memory, "lm", None, None)
    inputs.pop("labels")
    with torch.no_grad(), model.decoder_context():
        ours = model.model(**inputs).logits
        theirs = decoder(inputs_embeds=inputs["inputs_embeds"]).logits  # the original's separate decoder
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)
    with pytest.raises(Exception, match="freeze_decoder: false"):
        build_model(small_config("tiny-qwen2", layout="original", fixed_mem_size=K, mean_compression_rate=RATE,
                                 lora_target_modules=["q_proj", "v_proj"], restore_from=str(tmp_path / "d.safetensors")))


def test_segment_and_position_rules_on_hand_worked_cases():
    assert original_segments(10, 4, 1) == [(0, 4), (4, 8), (8, 10)]  # n = 3 segments of ceil(10/3) = 4, the last shorter
    assert original_segments(9, 4, 1) == [(0, 3), (3, 6), (6, 9)]
    assert original_segments(8, 4, 2) == [(0, 8)]
    assert original_memory_positions(10, 4).tolist() == [1, 4, 7, 10]
    assert original_memory_positions(5, 4).tolist() == [1, 2, 3, 5]  # linspace 1, 2.33, 3.67, 5 truncated


def test_chat_frame_of_the_tiny_tokenizer():
    from icae.models.loading import tiny_tokenizer

    tok = tiny_tokenizer()
    frame = chat_frame(tok)
    assert tok.decode(list(frame.user_prefix)) == "<|im_start|>user\n"
    assert tok.decode(list(frame.suffix)) == "<|im_end|>\n"
    assert tok.decode(list(frame.assistant_prefix)) == "<|im_start|>assistant\n"


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_export_round_trip(tmp_path, dtype):
    from icae.models import ICAE
    from icae.scripts import export

    model = build_model(small_config("tiny-qwen2", layout="original", fixed_mem_size=K, mean_compression_rate=RATE,
                                     lora_target_modules=["q_proj", "v_proj"], freeze_decoder=False,
                                     use_position_identifiers=True))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    model.save_pretrained(tmp_path / "ckpt")
    out = export.main(["--format", "original", str(tmp_path / "ckpt"), str(tmp_path / "o.safetensors"), "--dtype", dtype])
    from safetensors.torch import load_file

    keys = set(load_file(str(out)))
    assert "memory_token_embed.weight" in keys and any(k.startswith("decoder.") and "lora_A.default" in k for k in keys)
    assert any(k.startswith("icae.base_model.model.") and k.endswith("lora_B.default.weight") for k in keys)
    again = build_model(small_config("tiny-qwen2", layout="original", fixed_mem_size=K, mean_compression_rate=RATE,
                                     lora_target_modules=["q_proj", "v_proj"], freeze_decoder=False,
                                     use_position_identifiers=True, restore_from=str(out))).eval()
    model.eval()
    for name, value in model.trainable_state_dict().items():  # LoRA is float32 in the file: exact either way
        expected = value if ("lora" in name or dtype == "float32") else value.to(torch.bfloat16).float()
        torch.testing.assert_close(again.trainable_state_dict()[name], expected, atol=0, rtol=0)
    if dtype == "float32":
        ids = list(range(30, 60))
        torch.testing.assert_close(again.compress([ids]).slots, model.compress([ids]).slots, atol=0, rtol=0)
    with pytest.raises(Exception, match="exists"):
        export.main(["--format", "seed", str(tmp_path / "ckpt"), str(out)])  # the format's earlier name
    assert isinstance(again, ICAE)
