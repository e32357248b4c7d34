import json

import pytest

from icae.data.collators import FinetuneCollator
from icae.data.sources import SourceError
from icae.data.squad import (
    load_squad,
    qa_sample,
    read_squad_json,
    write_fixture,
)
from tests.conftest import make_model


@pytest.mark.parametrize("version", ["1.1", "2.0"])
def test_fixture_is_in_the_exact_squad_format(tmp_path, version):
    train, dev = write_fixture(tmp_path, n_train=4, n_eval=2, seed=3, version=version)
    data = json.loads(train.read_text())
    assert data["version"] == version and len(data["data"]) == 4
    for article in data["data"]:
        assert set(article) == {"title", "paragraphs"}
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                assert {"id", "question", "answers"} <= set(qa)
                for a in qa["answers"]:
                    assert paragraph["context"][a["answer_start"]: a["answer_start"] + len(a["text"])] == a["text"]
                if version == "2.0":
                    assert qa["is_impossible"] == (not qa["answers"])
    records = read_squad_json(dev)
    assert len(records) == 2 * (5 if version == "2.0" else 4)
    assert all(r["id"] and r["context"] and r["question"] for r in records)
    assert write_fixture(tmp_path / "again", 4, 2, 3, version)[0].read_text() == train.read_text()  # deterministic


def test_load_errors(tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        load_squad(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text('{"rows": []}')
    with pytest.raises(SourceError, match="SQuAD format"):
        load_squad(str(bad))


def test_qa_samples_and_loss_on_the_answer_only():
    model = make_model()
    tok = model.tokenizer
    record = {"id": "1", "context": "Alder was founded in 1742.", "question": "When was Alder founded?",
              "answers": ["1742"], "is_impossible": False}
    sample = qa_sample(tok, record, "\nQuestion: {question}\nAnswer:")
    assert sample.target_ids[-1] == tok.eos_token_id
    assert tok.decode(sample.target_ids[:-1]).strip() == "1742"
    assert "When was Alder founded?" in tok.decode(sample.prompt_ids)
    assert sample.answers == ["1742"] and sample.id == "1"
    impossible = qa_sample(tok, {**record, "answers": [], "is_impossible": True}, "{question}")
    assert impossible.target_ids == [tok.eos_token_id] and impossible.answers == []  # the empty answer
    batch = FinetuneCollator(tok.pad_token_id)([sample.features(), impossible.features()])
    out = model(**batch)
    scored = [row[row != -100].tolist() for row in out.labels]
    assert scored == [sample.target_ids, [tok.eos_token_id]]
