"""Class names: from ``words.txt``, the built-in WordNet table, or ``--class-names FILE``;
stored in ``meta.json`` and read back as ``DatasetInfo.class_names``."""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.dataset import read_info
from tools import convert as tool  # sets sys.path[0] to the repository root, as when run


def image_folder(root: Path, classes: list[str]) -> Path:
    for split, count in (("train", 2), ("test", 1)):
        for c, name in enumerate(classes):
            for n in range(count):
                folder = root / split / name
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.full((8, 8, 3), 10 * c + n, np.uint8)).save(folder / f"{n}.png")
    return root


def run(*args: object) -> int:
    """The tool's exit status, run in this process."""
    try:
        tool.main([*map(str, args), "--workers", "1"])
    except SystemExit as stop:
        return int(stop.code or 0)
    return 0


def test_words_txt_names_each_class_by_its_first_synonym_from_an_archive(tmp_path):
    source = image_folder(tmp_path / "tiny" / "tiny-imagenet-200-32x32", ["n01443537", "n01629819"])
    (source / "words.txt").write_text("n01443537\tgoldfish, Carassius auratus\nn01629819\tEuropean fire salamander\n"
                                      "n99999999\tnot a class here\n")
    archive = tmp_path / "tiny.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source, arcname=source.name)
    assert run(archive, tmp_path / "out") == 0
    info = read_info(tmp_path / "out")
    assert info.classes == ["n01443537", "n01629819"]
    assert info.class_names == ["goldfish", "European fire salamander"]


def test_imagenette_and_imagewoof_ids_are_named_from_the_built_in_table(tmp_path):
    source = image_folder(tmp_path / "src", ["n01440764", "n02086240", "n03394916", "n12345678"])
    assert run(source, tmp_path / "out") == 0
    assert read_info(tmp_path / "out").class_names == ["tench", "Shih-Tzu", "French horn", "n12345678"]


def test_a_class_names_file_names_the_classes_it_lists(tmp_path):
    source = image_folder(tmp_path / "src", ["b", "n01440764"])
    names = tmp_path / "names.txt"
    names.write_text("n01440764 a fish, not a tench\n\nb bee\n")
    assert run(source, tmp_path / "out", "--class-names", names) == 0
    assert read_info(tmp_path / "out").class_names == ["bee", "a fish, not a tench"]


@pytest.mark.parametrize(
    ("text", "message"),
    [("a ant\nzebra stripes\n", r"line 2: 'zebra' is not a class of the source"),
     ("a\n", r"line 1: expected '<class id> <name>', got 'a'")],
)
def test_a_bad_class_names_file_is_one_line_naming_it_and_nothing_is_written(tmp_path, capsys, text, message):
    source = image_folder(tmp_path / "src", ["a", "b"])
    names = tmp_path / "names.txt"
    names.write_text(text)
    assert run(source, tmp_path / "out", "--class-names", names) == 2
    stderr = capsys.readouterr().err
    assert len(stderr.strip().splitlines()) == 1
    assert f"--class-names {names}" in stderr
    assert re.search(message, stderr)
    assert not (tmp_path / "out").exists()


def test_a_data_set_converted_before_class_names_reads_its_ids_as_names(tmp_path):
    source = image_folder(tmp_path / "src", ["a", "b"])
    assert run(source, tmp_path / "out") == 0
    meta_path = tmp_path / "out" / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["class_names"]
    meta_path.write_text(json.dumps(meta))
    assert read_info(tmp_path / "out").class_names == ["a", "b"]
