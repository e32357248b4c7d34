"""The long-text fidelity benchmark: its held-out sets are cut as stated, and a run writes every reading."""

import json

import pytest

from icae.errors import UserError
from icae.scripts import fidelity
from tests.conftest import png_size


def test_windows_are_consecutive_and_exactly_long():
    ids = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
    got = fidelity.windows(ids, 4, count=10, seed=0, newline=[0])
    order = list(range(3))
    import random

    random.Random(0).shuffle(order)
    stream = [t for i in order for t in ids[i] + [0]]  # 12 tokens: three windows of 4
    assert got == [stream[0:4], stream[4:8], stream[8:12]]
    assert fidelity.windows(ids, 4, count=2, seed=0, newline=[0]) == got[:2]
    assert fidelity.windows(ids, 13, count=5, seed=0, newline=[0]) == []  # not enough text


def test_whole_outputs_keep_the_length_range():
    ids = [[0] * n for n in (5, 10, 20, 40, 80)]
    assert sorted(len(x) for x in fidelity.whole_outputs(ids, 10, 40, 10, seed=0)) == [10, 20, 40]
    assert len(fidelity.whole_outputs(ids, 10, 40, 2, seed=0)) == 2
    assert fidelity.segments(list(range(7)), 3) == [[0, 1, 2], [3, 4, 5], [6]]


def test_a_run_reads_each_text_three_ways(tmp_path, shipped_stand_ins):
    held = tmp_path / "held.jsonl"
    held.write_text("".join(json.dumps({"text": "\n".join(f"total {i}\n-rw-r--r-- 1 root root {j} f{j}.py"
                                                          for j in range(8))}) + "\n" for i in range(6)))
    out = tmp_path / "fid"
    result = fidelity.main(["--tool_outputs", str(held), "--range", "20", "400", "--lengths", "16", "48",
                            "--samples", "3", "--out", str(out), "--checkpoint", "tiny-icae-4x"])
    rows = result["compressors"]["tiny-icae-4x"]["rows"]
    assert set(rows) == {"tool outputs of 20-400 tokens, whole", "16-token windows", "48-token windows"}
    assert rows["16-token windows"]["samples"] == rows["48-token windows"]["samples"] == 3
    for row in rows.values():
        assert set(fidelity.WAYS) <= set(row)
    # 16 tokens are one segment (k=4 slots of 4 tokens): whole and per segment read the same slots the same way.
    one = rows["16-token windows"]
    assert one["whole"]["bleu1"] == pytest.approx(one["per_segment"]["bleu1"])
    assert one["whole"]["token_accuracy"] == pytest.approx(one["per_segment"]["token_accuracy"])
    assert one["whole"]["token_accuracy"] != pytest.approx(one["no_memory"]["token_accuracy"])
    assert json.loads((out / "fidelity.json").read_text())["seed"] == 0
    assert "| 48-token windows | 3 |" in (out / "fidelity.md").read_text()
    assert png_size(out / "fidelity.png") == (600, 400)
    fidelity.main(["--tool_outputs", str(held), "--lengths", "16", "--samples", "1", "--out", str(out),
                   "--checkpoint", "tiny-icae-4x"])
    assert (out / "fidelity_2.json").is_file()  # an earlier run is never replaced


def test_bad_arguments_are_one_message(tmp_path):
    with pytest.raises(UserError, match="--samples must be >= 1.*--lengths must be >= 1"):
        fidelity.main(["--samples", "0", "--lengths", "0", "--out", str(tmp_path)])
    with pytest.raises(UserError, match="no such file"):
        fidelity.main(["--tool_outputs", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path)])
