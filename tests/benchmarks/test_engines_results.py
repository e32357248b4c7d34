"""The engines benchmarks never replace an earlier run's result.json silently: refused before anything runs, replaced
with --overwrite (and said)."""

import json

import pytest

from icae.benchmarks import engines, engines_quality
from icae.errors import UserError
from icae.utils.io import replaceable


def test_replaceable_refuses_an_existing_file_unless_asked_and_says_so(tmp_path, capsys):
    path = tmp_path / "result.json"
    assert replaceable(path, False) == path  # nothing there: fine, and nothing said
    path.write_text("{}")
    with pytest.raises(UserError, match=r"result.json exists \(an earlier run's result\); pass --overwrite"):
        replaceable(path, False)
    assert replaceable(path, True) == path and "result.json will be replaced when this run writes" in \
        capsys.readouterr().err
    (tmp_path / "dir.json").mkdir()  # not a file: refused even with overwrite, before the run, not when it writes
    for overwrite in (False, True):
        with pytest.raises(UserError, match="dir.json exists and is not a file"):
            replaceable(tmp_path / "dir.json", overwrite)


def test_the_vllm_benchmark_refuses_before_it_loads_anything(tmp_path, monkeypatch):
    import sys
    import types

    from icae.benchmarks import engines_vllm

    fake = types.ModuleType("icae.engines.vllm")  # vLLM is not installed here; nothing of it may be reached
    fake.VllmICAE = None
    monkeypatch.setitem(sys.modules, "icae.engines.vllm", fake)
    loaded = []
    monkeypatch.setattr("icae.models.loading.load_base_model", lambda *a: loaded.append(a))
    (tmp_path / "result.json").write_text('{"earlier": true}')
    with pytest.raises(UserError, match="pass --overwrite"):
        engines_vllm.main(["--work", str(tmp_path)])
    assert loaded == [] and json.loads((tmp_path / "result.json").read_text()) == {"earlier": True}


@pytest.mark.parametrize("module,argv", [(engines, ["--checkpoint", "tiny-icae-4x"]),
                                         (engines_quality, ["--checkpoint", "tiny-icae-4x"])])
def test_an_earlier_result_is_kept_unless_overwrite(module, argv, tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(module, "run", lambda a: ran.append(a) or {"measured": len(ran)})
    monkeypatch.setattr(module, "table", lambda result: "")
    (tmp_path / "result.json").write_text('{"earlier": true}')
    with pytest.raises(UserError, match="pass --overwrite"):
        module.main([*argv, "--work", str(tmp_path)])
    assert ran == [] and json.loads((tmp_path / "result.json").read_text()) == {"earlier": True}
    module.main([*argv, "--work", str(tmp_path), "--overwrite"])
    assert json.loads((tmp_path / "result.json").read_text()) == {"measured": 1}
