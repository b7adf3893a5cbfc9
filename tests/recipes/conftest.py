import json

import numpy as np
import pytest

from pipelines.tensor import write_split


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """64 training and 24 test images of 32×32 in 4 classes, in the tensor format."""
    root = tmp_path_factory.mktemp("data") / "tiny"
    rng = np.random.default_rng(0)
    splits = {}
    for split, count in (("train", 64), ("test", 24)):
        labels = np.arange(count) % 4
        # Class-dependent colour so the data has something to learn.
        images = rng.integers(0, 120, (count, 32, 32, 3), dtype=np.uint8)
        images[np.arange(count), :, :, labels % 3] += 100
        splits[split] = write_split(root / split, images, labels, [f"{split}/{i}" for i in range(count)])
    meta = {"format": "tensor", "version": 1, "source": "synthetic", "classes": list("abcd"),
            "image_size": [32, 32], "splits": splits}
    (root / "meta.json").write_text(json.dumps(meta))
    return root
