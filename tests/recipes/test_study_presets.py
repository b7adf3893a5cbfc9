"""The seed-003 data presets on small generated folders of each data set's layout: ImageWoof
and ImageNette v2-160 as fast.ai ships them (``train/``, ``val/``, WordNet-id class folders;
v2-160 at its shorter side of 160 px, kept by the jpeg format and upsampled on purpose),
NABirds as the Cornell Lab ships it (``images/<class folder>/``, ``images.txt``,
``image_class_labels.txt``, ``train_test_split.txt``, ``classes.txt``). Each is converted by
the README's command and trains one step of a recipe with its preset."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fastssl.recipes.launch import main as run_recipe
from tools.convert import main as convert

ONE_STEP = ["--model.width", "8", "--model.norm", "bn", "--optim.batch-size", "4", "--run.stop-after-steps", "1",
            "--run.no-knn-before-training", "--run.no-progress-bar", "--run.eval-batch-size", "8"]
WOOF = ("n02086240", "n02087394")  # Shih-Tzu, Rhodesian ridgeback
NETTE = ("n01440764", "n02102040")  # tench, English springer


def _jpeg(path: Path, seed: int, width: int, height: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


def image_folder(root: Path, classes: tuple[str, ...], width: int, height: int) -> Path:
    for seed in range(12):
        split = "train" if seed < 8 else "val"
        _jpeg(root / split / classes[seed % 2] / f"{seed}.JPEG", seed, width, height)
    return root


def nabirds(root: Path) -> Path:
    rows = [(i + 1, 295 + i % 3, int(i < 8)) for i in range(12)]  # id, class id, is-training
    for image, label, _ in rows:
        _jpeg(root / "images" / f"{label:04d}" / f"{image}.jpg", image, 40 + image, 30)
    tables = {"images.txt": [f"{i} {c:04d}/{i}.jpg" for i, c, _ in rows],
              "image_class_labels.txt": [f"{i} {c}" for i, c, _ in rows],
              "train_test_split.txt": [f"{i} {t}" for i, _, t in rows],
              "classes.txt": ["0 Birds", "295 Cardinal", "296 Blue Jay", "297 Mallard"]}
    for name, lines in tables.items():
        (root / name).write_text("".join(f"{line}\n" for line in lines))
    return root


@pytest.mark.parametrize(("preset", "make", "convert_args"), [
    ("imagewoof-224", lambda root: image_folder(root, WOOF, 64, 48), ["--size", "48"]),
    ("imagenette-v2-160", lambda root: image_folder(root, NETTE, 213, 160), ["--format", "jpeg"]),
    ("nabirds-224", nabirds, ["--size", "32"]),
])
def test_a_study_preset_trains_on_its_data_set_layout(tmp_path, preset, make, convert_args):
    source, data = make(tmp_path / "source"), tmp_path / "data"
    convert([str(source), str(data), *convert_args])
    meta = json.loads((data / "meta.json").read_text())
    held_out = "test" if preset == "nabirds-224" else "val"  # fast.ai's folders keep the name val
    assert meta["splits"]["train"]["count"] == 8 and meta["splits"][held_out]["count"] == 4
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        args = ["--preset", preset, "--data", str(data), "--run.out-dir", str(tmp_path / "runs"), *ONE_STEP]
        summary = run_recipe("simclr", args)
    config = summary["config"]
    assert config["views"]["size"] == 224 and config["model"]["cifar_stem"] is False
    assert config["optim"]["epochs"] == 200 and config["optim"]["batch_size"] == 4  # the study's 200 epochs
    upsampling = [str(w.message) for w in caught if "upsampled views" in str(w.message)]
    assert len(upsampling) == 1  # every preset here upsamples these small images, each says so once
    if preset == "imagenette-v2-160":
        assert "on purpose: the study's 224 px views of ImageNette v2-160" in upsampling[0]
    else:
        assert "convert the data at the preset's size" in upsampling[0]
