"""The base builder's copying rows and its arguments (the build itself is minutes: not run here)."""

import pytest
import torch

from icae.scripts.build_tiny_base import parse_args, with_repeats


def test_repeats_copy_a_span_of_the_first_half_further_on_in_about_the_share_of_rows():
    batch = torch.arange(200 * 64).view(200, 64)  # every token unique: a repeat is visible as a duplicate
    out = with_repeats(batch, 0.25, torch.Generator().manual_seed(0))
    changed = [i for i in range(200) if not torch.equal(out[i], batch[i])]
    assert 30 <= len(changed) <= 70  # ~50 of 200
    for i in changed:
        row = out[i].tolist()
        moved = [t for t, v in enumerate(row) if v != batch[i, t].item()]  # the overwritten positions: one run
        dst, span = moved[0], len(moved)
        assert moved == list(range(dst, dst + span)) and 8 <= span <= 16  # 16: a quarter of the row
        src = row.index(row[dst])  # where the copied tokens stand first
        assert src + span <= 32 and src + span <= dst  # from the first half, before where they are written
        assert row[src:src + span] == row[dst:dst + span]
    assert torch.equal(with_repeats(batch, 0.0, torch.Generator().manual_seed(0)), batch)


def test_bad_arguments_are_refused(capsys):
    with pytest.raises(SystemExit) as e:
        parse_args(["--steps", "1", "--repeats", "1.5"])
    assert e.value.code == 2 and "--repeats is a share of rows, from 0 to 1; got 1.5" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--steps", "1", "--repeats", "0.5", "--block", "128", "--repeat_longest", "64"])
    assert "--repeat_longest must be from 8 (the shortest span) to a quarter of --block (32); got 64" in \
        capsys.readouterr().err
    args = parse_args(["--steps", "1", "--repeats", "0.5", "--block", "1024"])
    assert args.command == "python -m icae.scripts.build_tiny_base --steps 1 --repeats 0.5 --block 1024"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine with CUDA accepts --device cuda")
def test_a_cuda_device_is_refused_where_there_is_none(capsys):
    with pytest.raises(SystemExit) as e:
        parse_args(["--steps", "1", "--device", "cuda"])
    assert e.value.code == 2 and "--device cuda: this machine has no CUDA device" in capsys.readouterr().err


def test_every_problem_is_named_at_once_before_anything_loads(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    with pytest.raises(SystemExit) as e:
        parse_args(["--steps", "1", "--repeats", "2", "--block", "0", "--eval_every", "0", "--device", "tpu",
                    "--out", str(tmp_path / "f")])
    err = capsys.readouterr().err
    assert e.value.code == 2
    for part in ("--block must be 1 or more, got 0", "--eval_every must be 1 or more, got 0",
                 "--repeats is a share of rows", "--device must be cpu or cuda[:N], got 'tpu'", "is a file, not a model"):
        assert part in err
