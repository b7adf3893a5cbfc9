"""Cut the embedded demo data set from the shared CIFAR-10 (JPEG q75) archive.

    python demo/make_sample.py ../shared/data/cifar10-jpeg.tar.gz demo/cifar10-sample.tar.gz

Keeps the JPEG bytes as they are: 500 training and 100 test images per class, chosen at
random with a fixed seed, in the ImageFolder layout (train/<class>/, test/<class>/).
"""

from __future__ import annotations

import io
import random
import sys
import tarfile
from collections import defaultdict

PER_CLASS = {"train": 500, "test": 100}


def main(source: str, out: str) -> None:
    members = defaultdict(list)
    with tarfile.open(source) as archive:
        files = {m.name: archive.extractfile(m).read() for m in archive if m.isfile()}  # type: ignore[union-attr]
    for name in sorted(files):
        split, label, _ = name.split("/")
        members[split, label].append(name)
    rng = random.Random(0)
    with tarfile.open(out, "w:gz") as archive:
        for (split, _), names in sorted(members.items()):
            for name in sorted(rng.sample(names, PER_CLASS[split])):
                info = tarfile.TarInfo(name)
                info.size = len(files[name])
                archive.addfile(info, io.BytesIO(files[name]))


if __name__ == "__main__":
    main(*sys.argv[1:3])
