"""Verification of a converted data set on load: zeroed, truncated and altered files are
refused in one line naming the file, and a pass is remembered outside the data folder."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipelines import verify as verify_module
from pipelines.dataset import DatasetError, read_info
from pipelines.verify import fingerprint, verify

ROOT = Path(__file__).resolve().parents[2]
LEVELS = ("full", "quick", "off")
SMALL_BLOCK = 4096


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch):
    """Every test's cache in its own folder, never the real home's."""
    home = tmp_path / "cache"
    monkeypatch.setenv("FASTSSL_CACHE_DIR", str(home / "fastssl"))
    return home


@pytest.fixture(scope="module")
def pristine(tiny_dataset, tmp_path_factory):
    """A copy of the shared tiny data set with the quick fingerprints tools/convert.py records;
    each test changes only its own copy of this one. Its train/images.npy (197 KB) is under
    the 1 MiB that quick would read whole, so its blocks are 4 KiB here, as a file over 1 MiB
    gets 64 KiB ones: 16 of them with gaps between."""
    root = Path(shutil.copytree(tiny_dataset, tmp_path_factory.mktemp("verify") / "data"))
    meta = json.loads((root / "meta.json").read_text())
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(verify_module, "BLOCK_SIZE", SMALL_BLOCK)
        for split, entry in meta["splits"].items():
            entry.update(fingerprint(root / split, entry["sha256"]))
    (root / "meta.json").write_text(json.dumps(meta))
    return root


@pytest.fixture
def data(pristine, tmp_path):
    return Path(shutil.copytree(pristine, tmp_path / "data"))


def images_of(data):
    return data / "train" / "images.npy"


def sampled(data):
    return read_info(data).splits["train"]["quick"]["images.npy"]


def zero(path, offset, count):
    """Zero ``count`` bytes at ``offset`` in place: same size, and the same inode."""
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(bytes(count))


def refused(data, level):
    with pytest.raises(DatasetError) as caught:
        verify(read_info(data), level)
    message = str(caught.value)
    assert "\n" not in message
    return message


def without_fingerprints(data):
    meta = json.loads((data / "meta.json").read_text())
    for entry in meta["splits"].values():
        entry.pop("quick")
    (data / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("level", LEVELS)
def test_intact_data_passes_at_every_level(data, level):
    verify(read_info(data), level)


def test_zeroed_bytes_in_a_sampled_block_are_refused_by_full_and_quick(data):
    blocks = sampled(data)
    zero(images_of(data), blocks["offsets"][7] + 100, 1000)  # in the 8th of 16 blocks
    for level in ("full", "quick"):
        assert refused(data, level) == f"{images_of(data)}: checksum mismatch (the file changed since conversion; " \
                                       "re-convert it)"
    verify(read_info(data), "off")


def test_quick_cannot_see_a_change_between_sampled_blocks_but_full_does(data):
    # quick reads 16 blocks of 64 KiB per file: bytes zeroed wholly between two of them go
    # unseen; only full, which hashes every byte, refuses them.
    offsets = sampled(data)["offsets"]
    gap_start, gap_end = offsets[7] + SMALL_BLOCK, offsets[8]
    assert len(offsets) == 16 and gap_end - gap_start > 1000
    zero(images_of(data), gap_start + 10, 1000)
    verify(read_info(data), "quick")
    assert "images.npy: checksum mismatch" in refused(data, "full")


@pytest.mark.parametrize("fingerprinted", [True, False])
def test_a_truncated_file_is_refused_by_quick_and_full(data, fingerprinted):
    if not fingerprinted:  # converted before fingerprints: the .npy header still gives the size
        without_fingerprints(data)
    os.truncate(images_of(data), images_of(data).stat().st_size - 5000)
    for level in ("quick", "full"):
        message = refused(data, level)
        assert message.startswith(f"{images_of(data)}: ") and "re-convert" in message


def test_a_missing_file_is_named(data):
    (data / "test" / "labels.npy").unlink()
    for level in ("quick", "full"):
        assert refused(data, level).startswith(f"{data / 'test' / 'labels.npy'}: ")


def test_a_replaced_array_of_another_shape_is_refused_by_quick(data):
    labels = data / "train" / "labels.npy"
    size = labels.stat().st_size
    np.save(labels, np.zeros((len(np.load(labels)) // 2, 2), dtype=np.int64))  # same bytes, other shape
    assert labels.stat().st_size == size
    assert refused(data, "quick").startswith(f"{labels}: int64")


def test_old_data_sets_get_headers_only_at_quick_and_say_so_once(data, capsys):
    without_fingerprints(data)
    zero(images_of(data), 100_000, 1000)
    verify(read_info(data), "quick")  # its header is intact: quick cannot see it
    warnings = capsys.readouterr().err.strip().splitlines()
    assert len(warnings) == 1 and "without quick fingerprints" in warnings[0], warnings
    assert "checksum mismatch" in refused(data, "full")


def test_without_checksums_it_warns_and_goes_on(data, capsys):
    meta = json.loads((data / "meta.json").read_text())
    for entry in meta["splits"].values():
        entry.pop("sha256")
        entry.pop("quick")
    (data / "meta.json").write_text(json.dumps(meta))
    verify(read_info(data), "full")
    warnings = capsys.readouterr().err.strip().splitlines()
    assert len(warnings) == 1 and "cannot be verified" in warnings[0], warnings


@pytest.fixture
def hashing(monkeypatch):
    """Counts of whole-file and block hashing calls."""
    calls = {"files": 0, "blocks": 0}
    whole, blocks = verify_module.sha256, verify_module.block_hashes

    def count_files(*args):
        calls["files"] += 1
        return whole(*args)

    def count_blocks(*args):
        calls["blocks"] += 1
        return blocks(*args)

    monkeypatch.setattr(verify_module, "sha256", count_files)
    monkeypatch.setattr(verify_module, "block_hashes", count_blocks)
    return calls


@pytest.mark.parametrize("level", ["full", "quick"])
def test_a_pass_is_remembered_until_a_file_changes(data, hashing, level, cache_home):
    kind = "files" if level == "full" else "blocks"
    verify(read_info(data), level)
    first = hashing[kind]
    assert first == 6  # three files in each of two splits
    assert (cache_home / "fastssl" / "verified.json").is_file()
    verify(read_info(data), level)
    assert hashing[kind] == first  # not hashed again
    stat = images_of(data).stat()
    os.utime(images_of(data), ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # touched
    verify(read_info(data), level)
    assert hashing[kind] == 2 * first


def test_a_full_pass_answers_for_quick_but_not_the_reverse(data, hashing):
    verify(read_info(data), "quick")
    verify(read_info(data), "full")
    assert hashing == {"files": 6, "blocks": 6}
    verify(read_info(data), "quick")
    verify(read_info(data), "full")
    assert hashing == {"files": 6, "blocks": 6}


def test_a_data_set_at_another_path_is_verified_again(data, hashing, tmp_path):
    verify(read_info(data), "full")
    verify(read_info(Path(shutil.copytree(data, tmp_path / "elsewhere"))), "full")
    assert hashing["files"] == 12


def test_nothing_is_written_in_the_data_folder(data):
    # The data folder may be read-only (chmod would prove nothing as root, which CI runs as):
    # every file's name, size and mtime must be as before, and nothing added.
    def listing():
        return sorted((str(p.relative_to(data)), p.stat().st_size, p.stat().st_mtime_ns) for p in data.rglob("*"))

    before = listing()
    for level in ("quick", "full", "quick"):
        verify(read_info(data), level)
    assert listing() == before


@pytest.mark.parametrize("damage", ["garbage", "a folder"])
def test_an_unusable_cache_is_ignored(data, cache_home, damage, hashing):
    if damage == "garbage":
        (cache_home / "fastssl").mkdir(parents=True)
        (cache_home / "fastssl" / "verified.json").write_text("{not json")
    else:  # the cache folder cannot be made: its parent is a file
        cache_home.parent.mkdir(parents=True, exist_ok=True)
        cache_home.write_text("")
    verify(read_info(data), "quick")
    verify(read_info(data), "quick")
    assert hashing["blocks"] == (6 if damage == "garbage" else 12)


def test_training_on_zeroed_data_exits_2_with_one_line_before_any_training(data, tmp_path, cache_home):
    zero(images_of(data), sampled(data)["offsets"][1], 4096)
    command = [sys.executable, str(ROOT / "recipes" / "mocov2.py"), "--data", str(data), "--run.out-dir",
               str(tmp_path / "runs"), "--model.width", "8", "--optim.batch-size", "16", "--method.queue-size", "32",
               "--run.no-progress-bar"]
    env = {**os.environ, "FASTSSL_CACHE_DIR": str(cache_home / "fastssl")}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert lines == [f"mocov2.py: error: {images_of(data)}: checksum mismatch (the file changed since conversion; "
                     "re-convert it)"], result.stderr[-2000:]
    assert not list((tmp_path / "runs").rglob("metrics.jsonl"))
