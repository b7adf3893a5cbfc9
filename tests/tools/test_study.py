"""tools/study.py: a grid of cells through submitit's local executor, killed mid-way and
rerun (finished cells are not re-run, the tables come out complete); the grid's one-line
errors; the tables from run folders."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fastssl.recipes import names
from fastssl.study.cells import done
from fastssl.study.grid import GridError, read_grid
from fastssl.study.runner import cell_folder
from fastssl.study.tables import StudyTables, write_tables
from tests.conftest import make_tensor_dataset

ROOT = Path(__file__).resolve().parents[2]
TINY = {"model.width": 8, "model.bn-splits": 2, "optim.batch-size": 16, "optim.epochs": 1,
        "run.knn-every-epochs": 1, "run.knn-before-training": False, "run.eval-batch-size": 32}


def write_grid(folder: Path, data: Path, body: str = "", **top: object) -> Path:
    overrides = ", ".join(f'"{k}" = {json.dumps(v)}' for k, v in TINY.items())
    fields = {"name": "tiny", "out_dir": str(folder / "out"), "methods": ["simclr", "byol"],
              "transformations": ["baseline", "lorot"], **top}
    lines = [f"{key} = {json.dumps(value)}" for key, value in fields.items()]
    lines += [f"overrides = {{ {overrides} }}", "[linear]", 'protocol = "fast"',
              "[data.tiny]", f'path = "{data}"', 'preset = "cifar10"', body]
    grid = folder / "grid.toml"
    grid.write_text("\n".join(lines) + "\n")
    return grid


def start_study(grid: Path, *args: str) -> subprocess.Popen:
    """tools/study.py in a process group of its own (its submitit jobs join it)."""
    return subprocess.Popen([sys.executable, str(ROOT / "tools" / "study.py"), str(grid), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def test_a_grid_killed_mid_way_resumes_without_rerunning_finished_cells(tmp_path):
    data = make_tensor_dataset(tmp_path / "tiny", train=48, test=16)
    grid_file = write_grid(tmp_path, data)
    grid = read_grid(grid_file, names())
    folders = [cell_folder(grid, cell) for cell in grid.cells]
    assert len(folders) == 4
    process = start_study(grid_file)
    try:
        while not done(folders[0], "fast"):  # the first cell trained and probed: kill mid-grid
            assert process.poll() is None, process.communicate()[0]
            time.sleep(0.2)
        os.killpg(process.pid, signal.SIGKILL)  # the runner and the job in flight, at once
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert not all(done(folder, "fast") for folder in folders)
    finished_then = {folder.name: (folder / "summary.json").stat().st_mtime_ns
                     for folder in folders if done(folder, "fast")}

    rerun = start_study(grid_file)
    output = rerun.communicate()[0]
    assert rerun.returncode == 0, output
    for name, mtime in finished_then.items():
        assert f"done before, skipped: {name}" in output
        assert (grid.folder / "cells" / name / "summary.json").stat().st_mtime_ns == mtime
    started = [line for line in output.splitlines() if "started " in line]
    assert len(started) == 4 - len(finished_then)
    assert all(done(folder, "fast") for folder in folders)

    tables = StudyTables(grid)
    assert tables.complete
    markdown = (grid.folder / "tables" / "study.md").read_text()
    assert "| simclr |" in markdown and "| byol |" in markdown and "—" not in markdown.split("## tiny")[1]
    rows = list(csv.DictReader(io.StringIO((grid.folder / "tables" / "study.csv").read_text())))
    assert [(r["row"], r["transformation"]) for r in rows] == [
        ("simclr", "baseline"), ("simclr", "lorot"), ("byol", "baseline"), ("byol", "lorot")]
    assert all(0 <= float(r["top1_mean"]) <= 100 and float(r["minutes_mean"]) > 0 for r in rows)
    assert (grid.folder / "tables" / "heatmap-tiny-top1.png").stat().st_size > 0
    assert (grid.folder / "tables" / "heatmap-tiny-minutes.png").stat().st_size > 0
    # each cell is a normal run folder, made by the recipe's command line with the transformation's views
    config = json.loads((folders[1] / "summary.json").read_text())["config"]
    assert config["views"]["local_rotation_p"] == 1.0 and config["views"]["crop_scale"] == [0.15, 1.0]


@pytest.mark.parametrize(("text", "message"), [
    ('methods = ["nope"]', "'methods': no 'nope'"),
    ('methods = ["simclr"]\ntransformations = ["blur"]', "'transformations': no 'blur'"),
    ('methods = ["simclr"]\nseeds = []', "'seeds' must be a non-empty list"),
    ('methods = ["simclr"]\n[data.x]\npath = "d"', "'data.x' needs a path and a preset"),
    ('methods = ["simclr"]\noverrides = { "--optim.epochs" = 1 }\n[data.x]\npath = "d"\npreset = "cifar10"',
     "written without dashes"),
    ('methods = ["simclr"]\noverrides = { "run.seed" = 1 }\n[data.x]\npath = "d"\npreset = "cifar10"',
     "'run.seed' is set by the grid itself"),
    ('methods = ["simclr"\n', "not valid TOML"),
    ('methodz = ["simclr"]', "unknown key 'methodz'"),
])
def test_a_bad_grid_is_one_line_naming_file_and_key(tmp_path, text, message):
    grid = tmp_path / "grid.toml"
    grid.write_text(text + "\n")
    with pytest.raises(GridError, match=message) as caught:
        read_grid(grid, names())
    assert str(caught.value).startswith(str(grid)) and "\n" not in str(caught.value)


def test_a_missing_preset_exits_2_in_one_line(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text('methods = ["simclr"]\n[data.x]\npath = "d"\npreset = "nope"\n')
    process = subprocess.run([sys.executable, str(ROOT / "tools" / "study.py"), str(grid)], cwd=ROOT,
                             capture_output=True, text=True)
    assert process.returncode == 2
    assert process.stderr.strip().count("\n") == 0 and "simclr has no preset 'nope'" in process.stderr


def test_grid_axes_expand_alphas_for_vicregl_only_and_per_axis_overrides_in_order(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text('methods = ["simclr", "vicregl"]\ntransformations = ["baseline", "dcl"]\nalphas = [0.25, 0.95]\n'
                    'seeds = [1, 2]\noverrides = { "optim.epochs" = 3 }\n'
                    '[data.woof]\npath = "d"\npreset = "imagewoof-224"\ntransformations = ["dcl"]\n'
                    '[override.method.vicregl]\n"optim.epochs" = 4\n'
                    '[override.transformation.dcl]\n"views.region-grid" = 4\n')
    cells = read_grid(grid, names()).cells
    assert [(c.row, c.seed) for c in cells] == [
        ("simclr", 1), ("simclr", 2), ("vicregl α=0.25", 1), ("vicregl α=0.25", 2), ("vicregl α=0.95", 1),
        ("vicregl α=0.95", 2)]
    assert cells[2].overrides == (("optim.epochs", 3), ("optim.epochs", 4), ("views.region-grid", 4))
    assert cells[2].name == "woof--vicregl-a0.25--dcl--s1"


def fake_cell(folder: Path, top1: float, minutes: float, top5: float | None = None) -> None:
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({
        "finished": True, "wall_time_s": 60 * minutes, "peak_memory_mib": 2048.0,
        "peak_memory_kind": "CUDA peak allocated", "device": "NVIDIA H100", "knn": {"student": {"last": 1.0}}}))
    (folder / "linear.json").write_text(json.dumps({"mini-ssl": {"last": top1, "last_top5": top5}}))


def test_tables_pool_seeds_as_mean_and_std_and_set_the_seed_minutes_beside_ours(tmp_path):
    grid_file = tmp_path / "grid.toml"
    grid_file.write_text(f'methods = ["barlow_twins", "vicregl"]\ntransformations = ["baseline"]\nalphas = [0.95]\n'
                         f'seeds = [1, 2]\nout_dir = "{tmp_path}"\n[linear]\nprotocol = "mini-ssl"\n'
                         '[data.imagenette]\npath = "nowhere"\npreset = "imagenette-224"\nseed_table = "imagenette"\n')
    grid = read_grid(grid_file, names())
    for cell, (top1, minutes) in zip(grid.cells, [(70.0, 10.0), (72.0, 14.0), (74.0, 6.0)], strict=False):
        fake_cell(cell_folder(grid, cell), top1, minutes)
    tables = write_tables(grid)
    assert not tables.complete  # vicregl's second seed is missing
    markdown = (grid.folder / "tables" / "study.md").read_text()
    assert "| barlow_twins | 71.0 ± 1.4 (12.0 min / 2.00 GB, n = 2/2) |" in markdown
    assert "| vicregl α=0.95 | 74.0 (6.0 min / 2.00 GB, n = 1/2) |" in markdown
    # the seed's ImageNette cells: Barlow Twins baseline 0.705 in 123.8 min; VICRegL α=0.95 0.746 in 60.0 min
    assert "| barlow_twins | baseline | 71.0 ± 1.4 | 70.5 | 12.0 | 123.8 | 10.3× |" in markdown
    assert "| vicregl α=0.95 | baseline | 74.0 | 74.6 | 6.0 | 60.0 | 10.0× |" in markdown
    assert "unnamed GPU" in markdown


def test_a_convention_no_method_has_exits_2_in_one_line(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text('methods = ["simclr", "mocov2"]\nconvention = "lightly"\n'
                    '[data.x]\npath = "d"\npreset = "cifar10"\n')
    process = subprocess.run([sys.executable, str(ROOT / "tools" / "study.py"), str(grid)], cwd=ROOT,
                             capture_output=True, text=True)
    assert process.returncode == 2
    assert process.stderr.strip().count("\n") == 0 and "mocov2 has no convention 'lightly'" in process.stderr


def test_the_seed003_grid_runs_each_recipe_by_lightlys_convention_and_linear_protocol():
    """Every cell of the seed's grid takes the recipe's lightly convention on top of the data
    set's preset, then the transformation and the grid's options, as the recipe's own command
    line would; and is probed by lightly's linear protocol."""
    from fastssl.cli import parse
    from fastssl.config import view_fields
    from fastssl.recipes import get
    from fastssl.study.runner import check_recipes, recipe_args
    from pipelines.transformations import TRANSFORMATIONS

    grid = read_grid(ROOT / "configs" / "study" / "seed003.toml", names())
    check_recipes(grid)
    assert (len(grid.cells), grid.convention, grid.linear_protocol) == (170, "lightly", "lightly")
    cell = next(c for c in grid.cells if (c.method, c.transformation, c.data.key) == ("vicreg", "lorot", "imagewoof"))
    recipe = get(cell.method)
    args = recipe_args(grid, cell, view_fields(recipe.presets[cell.data.preset]))
    assert args[args.index("--convention") + 1] == "lightly" and args[args.index("--preset") + 1] == "imagewoof-224"
    rest = [a for i, a in enumerate(args) if a not in ("--preset", "--convention")
            and args[i - 1] not in ("--preset", "--convention")]
    cfg = parse(recipe.train_config, recipe.preset(cell.data.preset, convention="lightly"), rest, "vicreg.py", "")
    lightly = recipe.conventions["lightly"]
    assert cfg.method.variance_reduction == lightly["method"]["variance_reduction"] == "mean"
    assert recipe.preset().method.variance_reduction != "mean"
    assert (cfg.optim.optimizer, cfg.optim.epochs, cfg.optim.batch_size) == ("lars", 200, 256)
    assert cfg.views.local_rotation_p == TRANSFORMATIONS["lorot"]["local_rotation_p"]


def test_heat_map_labels_are_black_on_light_cells_and_white_on_dark_ones():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fastssl.study.tables import label_colour

    figure, axes = plt.subplots()
    image = axes.imshow([[0.0, 1.0]], cmap="viridis")  # dark purple to light yellow
    assert (label_colour(image, 0.0), label_colour(image, 1.0), label_colour(image, float("nan"))) == (
        "white", "black", "black")
    plt.close(figure)
