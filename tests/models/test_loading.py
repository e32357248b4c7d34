import pytest
import torch

from icae.models.loading import build_tiny_model, resolve_model_path, tiny_config


@pytest.mark.parametrize("family", ["qwen2", "qwen3", "mistral"])
def test_tiny_model_loads_with_from_pretrained(tmp_path, family):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = build_tiny_model(family, tmp_path / family, seed=1)
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert model.config.model_type == family
    assert model.config.num_hidden_layers == 2 and 32 <= model.config.hidden_size <= 128
    text = "def f(x):\n    return x * 2  # double\n"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    assert tok.eos_token_id is not None and tok.pad_token_id is not None and tok.pad_token_id != tok.eos_token_id
    again = build_tiny_model(family, tmp_path / "again", seed=1)
    m2 = AutoModelForCausalLM.from_pretrained(again)
    for (n, a), (_, b) in zip(model.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), n  # deterministic for a seed


def test_tiny_names_resolve_to_a_cached_directory(icae_home):
    path = resolve_model_path("tiny-mistral")
    assert path.startswith(str(icae_home)) and path.endswith("tiny-mistral")
    assert resolve_model_path("Qwen/Qwen2.5-0.5B") == "Qwen/Qwen2.5-0.5B"  # real names pass through unchanged
    assert resolve_model_path(path) == path


def test_unknown_family_is_rejected():
    with pytest.raises(ValueError, match="unknown tiny model family"):
        tiny_config("gpt2", vocab_size=10)


def test_building_does_not_touch_the_global_random_state(tmp_path):
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    build_tiny_model("qwen2", tmp_path / "m", hidden_size=32)
    assert torch.equal(torch.rand(3), expected)


def test_a_missing_shipped_checkpoint_names_the_command_that_rebuilds_it(tmp_path, monkeypatch):
    from icae.errors import UserError
    from icae.models import loading

    monkeypatch.setitem(loading.CONTROL_CHECKPOINTS, "tiny-llm-pretrained", tmp_path / "gone")
    monkeypatch.setitem(loading.SHIPPED_COMPRESSORS, "tiny-icae-4x", tmp_path / "gone4x")
    with pytest.raises(UserError, match=r"rebuild it: python -m icae\.scripts\.build_simple_llm$"):
        loading.resolve_checkpoint("tiny-llm-pretrained")
    with pytest.raises(UserError, match=r"rebuild it: python -m icae\.scripts\.build_compressor --rate 4 --config "
                                        r"icae/configs/compressor_long_4x\.yaml$"):
        loading.resolve_checkpoint("tiny-icae-4x")
