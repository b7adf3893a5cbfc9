"""The recipe registry: one declaration per method, a script per recipe, presets per data
set, configurations that survive their JSON form, and a --help with every option explained."""

import re
from pathlib import Path

import pytest

from fastssl.config import ConfigError, from_json, to_json, validate
from fastssl.recipes import UnknownRecipe, get, names
from fastssl.recipes.defaults import DATA_SETS
from fastssl.recipes.launch import main as run_recipe

ROOT = Path(__file__).resolve().parents[2]


def test_every_declared_recipe_has_its_script_and_its_method_module():
    assert names() == sorted(p.stem for p in (ROOT / "recipes").glob("*.py"))
    for name in names():
        recipe = get(name)
        assert recipe.method.__module__ == f"fastssl.methods.{name}" and recipe.name == name
        assert f'main("{name}")' in (ROOT / "recipes" / f"{name}.py").read_text()


def test_an_unknown_recipe_names_the_known_ones():
    with pytest.raises(UnknownRecipe, match="no recipe 'mocov9' .*mocov2"):
        get("mocov9")


@pytest.mark.parametrize("name", names())
def test_presets_start_with_the_data_sets_and_survive_their_json_form(name):
    recipe = get(name)
    presets = recipe.presets
    assert tuple(presets)[: len(DATA_SETS)] == DATA_SETS
    for cfg in presets.values():
        cfg = cfg.__class__(**{**cfg.__dict__, "data": Path("/data/x")})
        assert from_json(recipe.views.config, to_json(cfg), method=recipe.config) == cfg


@pytest.mark.parametrize("name", names())
def test_every_preset_passes_validation_without_a_warning(name):
    """A declared preset that the launcher would refuse (or warn about) is a recipe bug."""
    for preset, cfg in get(name).presets.items():
        assert validate(cfg) == [], preset


def test_stored_settings_that_do_not_fit_are_named():
    recipe = get("simclr")
    values = to_json(recipe.preset(data=Path("/x")))
    with pytest.raises(ConfigError, match="unknown setting optim.bogus"):
        from_json(recipe.views.config, {**values, "optim": {**values["optim"], "bogus": 1}}, method=recipe.config)
    with pytest.raises(ConfigError, match="model.norm: 'group' is not one of"):
        from_json(recipe.views.config, {**values, "model": {**values["model"], "norm": "group"}}, method=recipe.config)


def test_an_unknown_option_is_named_once_with_the_closest_known_one(capsys):
    with pytest.raises(SystemExit) as exit_:
        run_recipe("mocov2", ["--data", "x", "--optim.epoch", "3", "--optim.bogus", "1"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == ("mocov2.py: error: unrecognized options --optim.epoch, --optim.bogus; "
                                       "did you mean --optim.epochs for --optim.epoch?\n")


@pytest.mark.parametrize("name", names())
def test_help_explains_every_option_once(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        run_recipe(name, ["--help"])
    assert exit_.value.code == 0
    text = re.sub(r"[│╭╮╰╯─]", " ", capsys.readouterr().out)
    options = re.findall(r"^\s*(--[\w.-]+)[^\n]*\n\s*([^\n]*)", text, flags=re.M)
    assert len(options) > 60
    described = [(option, help_) for option, help_ in options if not help_.strip().startswith("--")]
    undescribed = [option for option, help_ in described if help_.strip().startswith("(default")]
    assert not undescribed, f"{name}: options without a description: {undescribed}"
    # tyro gives a field with no comment of its own the comment above the previous field:
    # two options in a row with the same text is that mistake.
    pairs = zip(described, described[1:], strict=False)
    repeats = [b for (_, ha), (b, hb) in pairs if ha == hb and not ha.startswith("(")]
    assert not repeats, f"{name}: options sharing the text of the option before: {repeats}"
