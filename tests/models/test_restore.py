"""restore_from is recognised by content: this project's checkpoints, the original tool's files (tests in
test_seed_layout), Hugging Face weight directories, hub ids; anything else is one clear error."""

import pytest
import torch
from safetensors.torch import save_file

from icae.errors import UserError
from icae.models import build_model
from icae.models.loading import load_base_model
from tests.conftest import small_config


def test_a_directory_of_hugging_face_weights_becomes_the_base(tmp_path):
    base, tok = load_base_model("tiny-qwen2")
    with torch.no_grad():
        base.model.layers[0].mlp.up_proj.weight.mul_(1.5)  # a "fine-tuned" base
    base.save_pretrained(tmp_path / "full", max_shard_size="200KB")  # sharded, with its index
    assert (tmp_path / "full" / "model.safetensors.index.json").is_file()
    model = build_model(small_config(restore_from=str(tmp_path / "full")))
    torch.testing.assert_close(model.base_causal_lm.model.layers[0].mlp.up_proj.weight,
                               base.model.layers[0].mlp.up_proj.weight, atol=0, rtol=0)
    q = model.base_causal_lm.model.layers[0].self_attn.q_proj  # wrapped by LoRA: its base layer got the weight
    torch.testing.assert_close(q.base_layer.weight, base.model.layers[0].self_attn.q_proj.weight, atol=0, rtol=0)


def test_weights_of_another_architecture_are_refused(tmp_path):
    other, _ = load_base_model("tiny-mistral")
    other.save_pretrained(tmp_path / "mistral")
    with pytest.raises(UserError, match="not those of 'tiny-qwen2'"):
        build_model(small_config(restore_from=str(tmp_path / "mistral")))


@pytest.mark.parametrize("make, needle", [
    (lambda p: None, "is not a local path, and the hub could not provide it"),
    (lambda p: (p / "x.safetensors").parent.mkdir(exist_ok=True) or save_file({"w": torch.zeros(2)}, str(p / "x.safetensors")),
     "neither a checkpoint of the original tool"),
    (lambda p: (p / "empty").mkdir(), "not something this project can load"),
])
def test_unrecognised_sources_get_one_clear_error(tmp_path, make, needle):
    make(tmp_path)
    source = {"is not a local path, and the hub could not provide it": "some-org/some-icae",
              "neither a checkpoint of the original tool": str(tmp_path / "x.safetensors"),
              "not something this project can load": str(tmp_path / "empty")}[needle]
    with pytest.raises(UserError, match=needle):
        build_model(small_config(restore_from=source))


def test_a_missing_local_path_says_so():
    with pytest.raises(UserError, match="no such file or directory: ./nowhere/ckpt"):
        build_model(small_config(restore_from="./nowhere/ckpt"))
