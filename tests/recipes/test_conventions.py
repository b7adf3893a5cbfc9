"""Conventions: named changes on top of any preset. Every method of the seed-003 study has a
``lightly`` one (fastssl/recipes/lightly.py); it changes only what it declares, keeps each data
preset's geometry, and ``--convention`` reaches the run's config.yaml."""

import pytest
import yaml

from fastssl.config import dotted, to_json, validate
from fastssl.recipes import get
from fastssl.recipes.launch import main as run_recipe

STUDY = ("simclr", "simsiam", "swav", "byol", "barlow_twins", "vicreg", "vicregl")
TINY = ["--model.width", "8", "--optim.batch-size", "16", "--optim.epochs", "1", "--run.eval-batch-size", "32",
        "--run.no-progress-bar", "--run.no-knn-before-training", "--run.stop-after-steps", "1"]


def declared(changes) -> dict:
    """A convention's changes as dotted names → their JSON values."""
    return {name: to_json(value) for name, value in dotted(changes).items()}


@pytest.mark.parametrize("name", STUDY)
def test_lightly_changes_exactly_what_it_declares_on_every_preset(name):
    recipe = get(name)
    changes = declared(recipe.conventions["lightly"])
    assert {key.split(".")[0] for key in changes} <= {"method", "optim", "model"}  # no views, no data
    for preset, cfg in recipe.presets.items():
        before, after = dotted(to_json(cfg)), dotted(to_json(recipe.preset(preset, convention="lightly")))
        assert before.keys() == after.keys()
        changed = {key for key in after if after[key] != before[key]}
        assert changed <= changes.keys() and all(after[key] == value for key, value in changes.items()), preset
        if preset == next(iter(recipe.presets)):  # only real differences from the recipe's defaults
            assert changed == changes.keys()
        assert validate(recipe.preset(preset, convention="lightly")) == [], preset


@pytest.mark.parametrize("name", STUDY)
def test_lightly_keeps_each_data_sets_geometry(name):
    recipe = get(name)
    for preset, stem, size in (("cifar10", True, 32), ("imagenette-224", False, 224)):
        cfg = recipe.preset(preset, convention="lightly")
        assert (cfg.model.cifar_stem, cfg.model.maxpool, cfg.views.size) == (stem, not stem, size)


def test_lightly_values_as_read_in_its_imagenette_benchmark():
    assert get("vicreg").preset(convention="lightly").method.variance_reduction == "mean"
    simclr = get("simclr").preset("imagenette-224", convention="lightly")
    assert (simclr.method.loss, simclr.method.temperature, simclr.method.proj_hidden) == ("nt_xent", 0.5, 512)
    swav = get("swav").preset(convention="lightly").optim
    assert (swav.optimizer, swav.lr, swav.weight_decay, swav.warmup_epochs) == ("adamw", 1e-3, 1e-6, 0)
    # The preset's own choice wins only where lightly agrees with the defaults: not num_matches.
    assert get("vicregl").preset("imagenette-224", convention="lightly").method.num_matches == (16, 4)


def test_options_apply_on_top_of_a_convention_and_an_unknown_one_is_named():
    assert get("simclr").preset(convention="lightly", method={"temperature": 0.3}).method.temperature == 0.3
    with pytest.raises(ValueError, match="mocov2 has no convention 'lightly' .conventions: none"):
        get("mocov2").preset(convention="lightly")


def refused(capsys, name, *args):
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        run_recipe(name, list(args))
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(lines) == 1 and lines[0].startswith(f"{name}.py: error:"), lines
    return lines[0]


def test_convention_on_the_command_line(tiny_dataset, tmp_path, capsys):
    data = ["--data", str(tiny_dataset), "--run.out-dir", str(tmp_path)]
    assert "--convention nope: simclr has lightly" in refused(capsys, "simclr", *data, "--convention", "nope")
    assert "--convention lightly: mocov2 has none" in refused(capsys, "mocov2", *data, "--convention", "lightly")
    for other in (["--resume"], ["--config", str(tmp_path / "config.yaml")]):
        assert "--convention: a resumed" in refused(capsys, "simclr", *data, "--convention", "lightly", *other)
    run_recipe("simclr", [*data, *TINY, "--convention", "lightly", "--method.proj-dim", "32"])
    config = yaml.safe_load((tmp_path / "simclr-tiny" / "config.yaml").read_text())["config"]
    method = {key: config["method"][key] for key in ("loss", "temperature", "proj_hidden", "proj_dim")}
    assert method == {"loss": "nt_xent", "temperature": 0.5, "proj_hidden": 512, "proj_dim": 32}  # options on top
    assert (config["optim"]["warmup_epochs"], config["model"]["norm"]) == (0, "bn")


def test_help_names_the_conventions(capsys):
    with pytest.raises(SystemExit):
        run_recipe("vicregl", ["--help"])
    assert "conventions (--convention NAME, on top of the preset): lightly" in capsys.readouterr().out
