"""Nothing loads silently wrong: a checkpoint refuses another base model and keys that change what its tensors mean."""

import pytest

from icae import ICAE, CheckpointError, ConfigError
from icae.models import build_model
from tests.conftest import make_model, small_config


@pytest.fixture
def checkpoint(tmp_path):
    make_model("tiny-qwen2").save_pretrained(tmp_path / "ckpt", small_config("tiny-qwen2"))
    return tmp_path / "ckpt"


def test_another_base_model_is_refused(checkpoint):
    with pytest.raises(CheckpointError, match="trained on base model 'tiny-qwen2'.*set model_name_or_path"):
        build_model(small_config("tiny-mistral", restore_from=str(checkpoint)))


@pytest.mark.parametrize("key, value", [("lora_alpha", 64), ("mean_compression_rate", 2), ("lora_r", 4),
                                        ("fixed_mem_size", 8), ("use_position_identifiers", True)])
def test_keys_that_change_the_tensors_meaning_are_refused(checkpoint, key, value):
    with pytest.raises(ConfigError, match=f"{key}: checkpoint .* was trained with"):
        ICAE.from_pretrained(checkpoint, **{key: value})
    with pytest.raises(ConfigError, match=key):
        build_model(small_config("tiny-qwen2", restore_from=str(checkpoint), **{key: value}))


def test_harmless_overrides_load(checkpoint):
    model = ICAE.from_pretrained(checkpoint, torch_dtype="bfloat16", train=False, model_max_length=512)
    assert model.args.model_max_length == 512 and not any(p.requires_grad for p in model.parameters())


def test_a_truncated_weights_file_names_the_path(checkpoint):
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=f"{weights}: not a readable safetensors file"):
        ICAE.from_pretrained(checkpoint)
