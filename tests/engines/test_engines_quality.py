"""The held-out selection of icae.benchmarks.engines_quality: the first n texts whose token count is in range, in
file order, and a clear error when the file has too few."""

import json

import pytest

from icae.benchmarks.engines_quality import held_out_texts
from icae.errors import UserError


def words(text):  # a tokenizer double: one token per whitespace-separated word
    return {"input_ids": text.split()}


def test_held_out_texts_takes_the_first_in_range_in_file_order(tmp_path):
    path = tmp_path / "held.jsonl"
    lengths = [3, 9, 5, 1, 6, 4, 7]
    path.write_text("".join(json.dumps({"text": " ".join(["w"] * n), "kind": "ls"}) + "\n" for n in lengths))
    got = held_out_texts(words, path, 3, 4, 7)
    assert [len(t.split()) for t in got] == [5, 6, 4]  # 3, 9 and 1 are out of [4, 7]; 7 comes after the third
    with pytest.raises(UserError, match="only 4 texts of 4..7 tokens"):
        held_out_texts(words, path, 5, 4, 7)
