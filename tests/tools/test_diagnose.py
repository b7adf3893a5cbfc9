"""tools/diagnose.py writes the t-SNE map and the neighbour grid of a trained checkpoint (or
of its export, beside it); bad input is one error line, status 2 and nothing written; without
the [report] extra it says so in one line."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest
from PIL import Image

from fastssl.export import export
from tools import diagnose as tool

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--queries", "3", "--neighbours", "4", "--tsne-images", "20"]


@pytest.fixture
def checkpoint(trained_checkpoint) -> Path:
    return trained_checkpoint


def test_writes_both_pngs(checkpoint, tmp_path, capsys):
    out = tmp_path / "diagnostics"
    tool.main([str(checkpoint), "--out", str(out), *SMALL])
    assert sorted(p.name for p in out.iterdir()) == ["neighbours.png", "tsne.png"]  # no temporary left
    for name in ("tsne.png", "neighbours.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and min(image.size) > 100
    with Image.open(out / "neighbours.png") as grid:
        assert grid.size[0] > grid.size[1]  # 3 rows of 1 query + 4 neighbours
    assert "tsne.png" in capsys.readouterr().out


def test_bad_input_is_one_line_and_writes_nothing(checkpoint, tmp_path, capsys):
    out = tmp_path / "diagnostics"
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    for args, expected in [
        ([str(tmp_path / "missing.pt")], "no such file"),
        ([str(tmp_path / "notes.txt")], "not a fastssl checkpoint"),
        ([str(checkpoint), "--queries", "0"], "at least 1"),
        ([str(checkpoint), "--neighbours", "65"], "--neighbours 65"),
        ([str(checkpoint), "--data", str(tmp_path / "nowhere")], "not a converted data set"),
    ]:
        with pytest.raises(SystemExit) as exit_:
            tool.main([*args, "--out", str(out)])
        assert exit_.value.code == 2, args
        err = capsys.readouterr().err.strip()
        assert err.startswith("diagnose.py: error:") and "\n" not in err and expected in err, (args, err)
    assert not out.exists()


def test_an_export_gets_its_pngs_beside_it(checkpoint, tmp_path, capsys):
    export(checkpoint.parent, tmp_path / "exported")
    tool.main([str(tmp_path / "exported"), *SMALL])
    assert sorted(p.name for p in (tmp_path / "exported").iterdir()) == ["backbone.pt", "model_card.json",
                                                                         "neighbours.png", "tsne.png"]
    assert capsys.readouterr().out.startswith("mocov2-tiny: written")  # the run's name, from the model card


@pytest.mark.parametrize("module", ["matplotlib", "sklearn.manifold"])
def test_without_the_report_extra_it_names_the_extra(module, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script rewrites sys.path[0]
    monkeypatch.setattr(sys, "argv", ["diagnose.py", "runs/x"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(ROOT / "tools" / "diagnose.py"), run_name="__main__")
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err == f"diagnose.py: error: needs the [report] extra ({module} is missing): pip install -e '.[report]'\n"
