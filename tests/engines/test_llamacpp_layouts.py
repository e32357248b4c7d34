"""The llama.cpp backend feeds the PyTorch ICAE's inputs: decoder rows (AE/FT/LM, native and original layouts, with and
without position identifiers) and interleaved rows, built from the engine's own tables (token, memory and special
embeddings) and with the padding removed. No llama.cpp needed."""

import numpy as np
import pytest
import torch

from tests.conftest import TEXTS, make_model
from tests.engines.fakes import engine_for as _engine_for


SETTINGS = [dict(layout="native", use_position_identifiers=True), dict(layout="native", use_position_identifiers=False),
            dict(layout="original", use_position_identifiers=True), dict(layout="original", use_position_identifiers=False)]


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: f"{s['layout']}-ids{int(s['use_position_identifiers'])}")
@pytest.mark.parametrize("mode", ["ae", "ft", "lm"])
def test_decoder_rows_equal_the_models(settings, mode):
    model = make_model("tiny-mistral", fixed_mem_size=4, add_special_token_for_lm=mode == "lm", **settings)
    engine = _engine_for(model)
    with torch.no_grad():
        memory = model.compress(TEXTS)
        prompts = model.tokenize(["# q?\n", "x", "why is it so?\n"])
        ref = model.decoder_inputs(memory, mode, prompts)
    for i in range(len(TEXTS)):
        embeds, pos = engine.decoder_row(memory, i, mode, prompts[i])
        real = ref["attention_mask"][i].bool()
        assert pos.tolist() == ref["position_ids"][i][real].tolist()
        assert np.allclose(embeds, ref["inputs_embeds"][i][real].numpy(), atol=1e-6)


@pytest.mark.parametrize("identifiers", [True, False])
def test_span_rows_equal_the_models(identifiers):
    from icae.models import Span, layouts

    model = make_model("tiny-qwen2", fixed_mem_size=4, use_position_identifiers=identifiers)
    engine = _engine_for(model)
    t = model.tokenize(["user: look\n", TEXTS[2], "assistant:", TEXTS[0]])
    row = [Span(t[0]), Span(t[1], compress=True), Span(t[2], loss=True), Span(t[3], compress=True)]
    for start in ((0, 0), (5, 9)):
        with torch.no_grad():
            memories, _ = model.compress_spans([row])
            ref = layouts.span_inputs(model, [row], memories, start)
        embeds, pos, virtual = engine.span_row(row, memories, start)
        assert pos.tolist() == ref["position_ids"][0].tolist()
        assert np.allclose(embeds, ref["inputs_embeds"][0].numpy(), atol=1e-6)
        assert virtual == sum(s.ids.numel() for s in row)


def test_mrope_positions_are_section_major():
    from icae.engines.manifest import mrope_positions

    assert mrope_positions([0, 1, 2], [7, 2, 0]).tolist() == [0, 1, 2, 7, 2, 0, 0, 0, 0, 0, 0, 0]


def test_from_pretrained_backend_choice(tmp_path):
    from icae.errors import UserError
    from icae.models import ICAE

    with pytest.raises(UserError, match="backend must be torch or llamacpp"):
        ICAE.from_pretrained(tmp_path, backend="onnx")
    with pytest.raises(UserError, match="icae export --format gguf"):  # a directory that is no export says how
        ICAE.from_pretrained(tmp_path, backend="llamacpp")
