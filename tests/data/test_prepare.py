import json

import pytest
from datasets import load_from_disk

from icae.config import ConfigError, load_config
from icae.data.prepare_data_for_pretraining import (
    INFO_NAME,
    build_samples,
    cut_document,
    prepare,
)
from icae.data.sources import SourceError, iter_documents


def test_cut_document_windows():
    ids = list(range(25))
    # windows of 8 + 4 = 12: [0..11], [12..23], [24]; contexts of at least 2 tokens kept
    assert cut_document(ids, 8, 4, min_len=2) == [
        (list(range(0, 8)), list(range(8, 12))),
        (list(range(12, 20)), list(range(20, 24))),
    ]
    assert cut_document(ids, 8, 4, min_len=1)[-1] == ([24], [])
    assert cut_document(list(range(5)), 8, 0, min_len=1) == [(list(range(5)), [])]


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "code"
    (root / "pkg").mkdir(parents=True)
    for i in range(12):
        body = "\n".join(f"def f{i}_{j}(x):\n    return x * {j} + {i}\n" for j in range(6))
        (root / "pkg" / f"mod{i}.py").write_text(body)
    (root / "README.md").write_text("A small package of arithmetic helpers used by the tests.\n" * 5)
    (root / "blob.bin").write_bytes(b"\xff\xfe\x00binary")  # skipped: not a listed extension
    (root / "notes.jsonl").write_text("\n".join(json.dumps({"text": f"note number {i} " * 20}) for i in range(3)) + "\n")
    return root


def config_for(tmp_path, corpus, **extra):
    values = {
        "dataset_repo": str(corpus), "train_output_file": str(tmp_path / "out" / "train"),
        "eval_output_file": str(tmp_path / "out" / "eval"), "fixed_mem_size": 4, "mean_compression_rate": 4,
        "min_tokens_for_lm": 8, "min_len": 4, "eval_size": 5, "seed": 1,
    }
    values.update(extra)
    return load_config(None, values)


def test_sources_read_code_trees_and_records(corpus):
    docs = list(iter_documents(str(corpus)))
    assert len(docs) == 12 + 1 + 3  # 12 modules, README, 3 JSONL records; the binary file is skipped
    assert any(d.startswith("note number 0") for d in docs)


def test_prepare_is_deterministic_and_holds_out_whole_documents(tmp_path, corpus):
    from icae.models.loading import load_tokenizer

    tok = load_tokenizer("tiny-qwen2")
    cfg = config_for(tmp_path, corpus)
    train1, eval1, info = build_samples(cfg, tok, show_progress=False)
    train2, eval2, _ = build_samples(cfg, tok, show_progress=False)
    assert (train1, eval1) == (train2, eval2)
    assert len(eval1) == 5 and info["train_samples"] == len(train1) > 0
    assert all(len(s["input_ids"]) <= 16 and len(s["continuation_ids"]) <= 8 for s in train1 + eval1)
    train_contexts = {tuple(s["input_ids"]) for s in train1}
    assert not any(tuple(s["input_ids"]) in train_contexts for s in eval1)  # no held-out text seen in training
    other, _, _ = build_samples(config_for(tmp_path, corpus, seed=2), tok, show_progress=False)
    assert other != train1  # the seed decides the split


def test_prepare_writes_both_splits_and_replaces_old_ones(tmp_path, corpus):
    cfg = config_for(tmp_path, corpus)
    info = prepare(cfg, show_progress=False)
    train = load_from_disk(str(tmp_path / "out" / "train"))
    assert len(train) == info["train_samples"] and set(train.column_names) == {"sample_id", "input_ids", "continuation_ids"}
    assert json.loads((tmp_path / "out" / "eval" / INFO_NAME).read_text())["split"] == "eval"
    prepare(config_for(tmp_path, corpus, eval_size=2), show_progress=False)
    assert len(load_from_disk(str(tmp_path / "out" / "eval"))) == 2
    assert not list((tmp_path / "out").glob(".*"))  # no staging leftovers


def test_token_budget_stops_reading(tmp_path, corpus):
    from icae.models.loading import load_tokenizer

    _, _, info = build_samples(config_for(tmp_path, corpus, token_num=100, eval_size=1), load_tokenizer("tiny-qwen2"),
                               show_progress=False)
    assert 100 <= info["tokens"] < 400 and info["documents"] < 16


def test_bad_sources_fail_clearly(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="no sample"):
        prepare(config_for(tmp_path, empty), show_progress=False)
    with pytest.raises(SourceError, match="no such file"):
        list(iter_documents(str(tmp_path / "missing.jsonl")))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"content": "x"}\n')
    with pytest.raises(SourceError, match="line 1 has no field 'text'"):
        list(iter_documents(str(bad)))
    not_list = tmp_path / "d.json"
    not_list.write_text('{"text": "x"}')
    with pytest.raises(SourceError, match="list of records"):
        list(iter_documents(str(not_list)))
    with pytest.raises(ConfigError) as err:
        prepare(load_config(None, {}), show_progress=False)
    assert "dataset_repo" in str(err.value) and "train_output_file" in str(err.value) and "eval_output_file" in str(err.value)


def test_parquet_source(tmp_path):
    from datasets import Dataset

    Dataset.from_dict({"content": ["alpha beta gamma", "delta epsilon"]}).to_parquet(str(tmp_path / "t.parquet"))
    assert list(iter_documents(str(tmp_path / "t.parquet"), text_field="content")) == ["alpha beta gamma", "delta epsilon"]
