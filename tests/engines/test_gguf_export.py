"""GGUF export (icae export --format gguf): tensors read back equal the checkpoint's, the manifest says how to drive
them, and bad requests are one clear message with exit code 2. Needs only the gguf package (extra ``engines``)."""

import json

import numpy as np
import pytest

from tests.conftest import make_model, small_config

gguf = pytest.importorskip("gguf", reason="the gguf package is not installed: pip install -e '.[engines]'")


def _checkpoint(tmp_path, name="tiny-qwen2", **overrides):
    overrides = {"freeze_decoder": False, "fixed_mem_size": 4, **overrides}
    model = make_model(name, **overrides)
    model.save_pretrained(tmp_path / "ckpt", small_config(name, **overrides))
    return model, tmp_path / "ckpt"


def _tensors(path):
    reader = gguf.GGUFReader(str(path))
    return reader, {t.name: t for t in reader.tensors}


def _field(reader, key):
    f = reader.fields[key]
    return f.contents() if hasattr(f, "contents") else f.parts[f.data[0]]


@pytest.mark.parametrize("family", ["tiny-qwen2", "tiny-mistral"])
def test_base_and_adapters_read_back_equal(tmp_path, family):
    from icae.engines.gguf_export import export_gguf

    model, ckpt = _checkpoint(tmp_path, family)
    out = export_gguf(ckpt, tmp_path / "gguf", types=("f32", "f16", "q8_0"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["weights"] == {"f32": "base-f32.gguf", "f16": "base-f16.gguf", "q8_0": "base-q8_0.gguf"}
    assert manifest["fixed_mem_size"] == 4 and manifest["decoder_lora"] == "decoder-lora.gguf"

    base = {n.replace(".base_layer.", "."): p for n, p in model.base_causal_lm.named_parameters() if "lora_" not in n}
    reader, t = _tensors(out / "base-f32.gguf")
    assert _field(reader, "general.architecture") == "qwen2vl"
    assert list(_field(reader, "qwen2vl.rope.dimension_sections")) == [0, 16, 0, 0]  # head_dim 32: all pairs on h
    q = base["model.layers.1.self_attn.q_proj.weight"].numpy()
    assert np.array_equal(np.asarray(t["blk.1.attn_q.weight"].data), q)
    assert np.array_equal(np.asarray(t["token_embd.weight"].data), base["model.embed_tokens.weight"].numpy())
    assert ("blk.0.attn_q.bias" in t) == (family == "tiny-qwen2")  # Mistral has no q/k/v biases
    _, t16 = _tensors(out / "base-f16.gguf")
    assert np.array_equal(np.asarray(t16["blk.1.attn_q.weight"].data), q.astype(np.float16))
    assert t16["blk.0.attn_norm.weight"].data.dtype == np.float32  # norms stay f32

    _, t8 = _tensors(out / "base-q8_0.gguf")
    w = t8["blk.1.attn_q.weight"]
    assert w.tensor_type == gguf.GGMLQuantizationType.Q8_0
    back = gguf.quants.dequantize(np.asarray(w.data), w.tensor_type)
    assert np.abs(back - q).max() <= np.abs(q).max() / 127 + 1e-6  # within half a step of each block's scale

    state = model.trainable_state_dict()
    for prefix, file in (("lora.", "encoder-lora.gguf"), ("decoder_lora.", "decoder-lora.gguf")):
        reader, lt = _tensors(out / file)
        assert _field(reader, "general.type") == "adapter" and _field(reader, "adapter.type") == "lora"
        assert float(_field(reader, "adapter.lora.alpha")) == 16.0
        a = state[f"{prefix}base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"].numpy()
        b = state[f"{prefix}base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"].numpy()
        assert np.array_equal(np.asarray(lt["blk.0.attn_q.weight.lora_a"].data), a)
        assert np.array_equal(np.asarray(lt["blk.0.attn_q.weight.lora_b"].data), b)
    enc = _tensors(out / "encoder-lora.gguf")[1]["blk.1.attn_v.weight.lora_b"].data
    dec = _tensors(out / "decoder-lora.gguf")[1]["blk.1.attn_v.weight.lora_b"].data
    assert not np.array_equal(np.asarray(enc), np.asarray(dec))  # two adapters, not one written twice

    from safetensors.numpy import load_file

    tables = load_file(str(out / "embeddings.safetensors"))
    assert np.array_equal(tables["memory_embeddings"], model.memory_embeddings.detach().numpy())
    assert np.array_equal(tables["special_embeddings"], model.special_embeddings.detach().numpy())


def test_token_table_dequantizes_like_the_weights(tmp_path):
    from icae.engines.gguf_export import export_gguf
    from icae.engines.llamacpp import TokenTable

    model, ckpt = _checkpoint(tmp_path)
    out = export_gguf(ckpt, tmp_path / "gguf", types=("f32", "q8_0"))
    table = model.base_causal_lm.get_input_embeddings().weight.detach().numpy()
    ids = [0, 5, 4095, 5]
    assert np.array_equal(TokenTable(out / "base-f32.gguf")(ids), table[ids])
    q8 = TokenTable(out / "base-q8_0.gguf")(ids)
    assert q8.shape == (4, 128) and np.array_equal(q8[1], q8[3])
    assert np.abs(q8 - table[ids]).max() <= np.abs(table[ids]).max() / 127 + 1e-6


def test_frozen_decoder_exports_one_adapter(tmp_path):
    from icae.engines.gguf_export import export_gguf

    _, ckpt = _checkpoint(tmp_path, freeze_decoder=True)
    out = export_gguf(ckpt, tmp_path / "gguf", types=("f32",))
    assert json.loads((out / "manifest.json").read_text())["decoder_lora"] is None
    assert not (out / "decoder-lora.gguf").exists() and (out / "encoder-lora.gguf").is_file()


def test_user_errors_exit_2(tmp_path, capsys):
    from icae.cli import main

    _, ckpt = _checkpoint(tmp_path)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("keep me")
    assert main(["export", "--format", "gguf", str(ckpt), str(tmp_path / "taken"), "--types", "f32"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "taken" / "x").read_text() == "keep me"
    assert main(["export", "--format", "gguf", str(ckpt), str(tmp_path / "o"), "--types", "f32,q3"]) == 2
    assert "unknown ['q3']" in capsys.readouterr().err


def test_qwen3_is_refused_by_name(tmp_path):
    from icae.engines.gguf_export import export_gguf
    from icae.errors import UserError

    _, ckpt = _checkpoint(tmp_path, "tiny-qwen3")
    with pytest.raises(UserError, match="qwen3"):
        export_gguf(ckpt, tmp_path / "gguf", types=("f32",))
    assert not (tmp_path / "gguf").exists()


def test_q4_k_without_llama_cpp_says_how(tmp_path, monkeypatch):
    import sys

    from icae.engines.gguf_export import export_gguf
    from icae.errors import UserError

    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import fails as where it is not built
    _, ckpt = _checkpoint(tmp_path)
    with pytest.raises(UserError, match="make llamacpp"):
        export_gguf(ckpt, tmp_path / "gguf", types=("f32", "q4_k"))
    assert not (tmp_path / "gguf").exists()


def test_manifest_refuses_other_versions(tmp_path):
    from icae.engines.manifest import Manifest
    from icae.errors import UserError

    _, ckpt = _checkpoint(tmp_path)
    from icae.engines.gguf_export import export_gguf

    out = export_gguf(ckpt, tmp_path / "gguf", types=("f32",))
    data = json.loads((out / "manifest.json").read_text())
    data["format_version"] = 99
    (out / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match="format_version 99"):
        Manifest.load(out)
    with pytest.raises(UserError, match="no manifest.json"):
        Manifest.load(tmp_path)
