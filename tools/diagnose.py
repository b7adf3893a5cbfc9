"""Look at what a backbone learned: a t-SNE map of test features and a nearest-neighbour grid.

    python tools/diagnose.py runs/<name> [--data DIR] [--out DIR] [--queries 8] [--neighbours 8]
    python tools/diagnose.py runs/<name>/export                    # backbone.pt and its model card
    python tools/diagnose.py resnet18.pth --arch resnet18 --data data/imagenette-128

Needs the [report] extra (matplotlib, scikit-learn). Loads the backbone through
``fastssl.weights`` as ``tools/linear_probe.py`` does (a run folder or checkpoint, an
export, or a plain torchvision/timm state dict with ``--arch``), in eval mode at its own
view size and normalisation, and writes into ``--out`` (default: the run folder, or the
folder of the export or state dict):

- ``tsne.png``: t-SNE (scikit-learn, PCA initialisation) of the L2-normalised features of up to
  ``--tsne-images`` test images (a random subset), coloured by class — the cosine geometry
  the kNN monitor votes in;
- ``neighbours.png``: ``--queries`` random test images, each followed by its ``--neighbours``
  nearest training images by cosine similarity of backbone features, framed green where the
  neighbour's class matches the query's and red where it does not.

Each PNG is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

# The repository root replaces this script's folder on the path: tools/profile.py would
# otherwise shadow the standard library's ``profile`` module (imported by torch).
sys.path[0] = str(Path(__file__).resolve().parents[1])

from fastssl.cli import fail, parse  # noqa: E402

PROGRAM = "diagnose.py"

try:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display

    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure
    from sklearn.manifold import TSNE
except ImportError as missing:
    fail(PROGRAM, f"needs the [report] extra ({missing.name or missing} is missing): pip install -e '.[report]'")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import tyro  # noqa: E402
from torch import Tensor  # noqa: E402

from fastssl.eval.linear import SplitFeatures, extract_splits  # noqa: E402
from fastssl.run_folder import RunFolderError  # noqa: E402
from fastssl.train.checkpoint import write_atomic  # noqa: E402
from fastssl.weights import CheckpointError, OutsideWeights, load_backbone  # noqa: E402
from pipelines.dataset import DatasetError, DatasetInfo, read_info  # noqa: E402
from pipelines.formats import open_split  # noqa: E402
from pipelines.loader import centre_square, centre_square_params  # noqa: E402

TSNE_FILE, NEIGHBOURS_FILE = "tsne.png", "neighbours.png"


@dataclass(frozen=True)
class DiagnoseConfig:
    weights: tyro.conf.Positional[Path]
    """A run folder or its checkpoint.pt; an export (its folder or backbone.pt); a plain state dict (with --arch)."""
    data: Path | None = None  # converted data set; default: the one it trained on (required for a plain state dict)
    out: Path | None = None  # folder for tsne.png and neighbours.png; default: the run folder (the weights' folder)
    tsne_images: int = 2000  # test images in the t-SNE map (a random subset when there are more)
    perplexity: float = 30.0  # t-SNE perplexity (lowered to (n − 1)/3 for small sets)
    queries: int = 8  # rows of the neighbour grid
    neighbours: int = 8  # training neighbours shown per query
    eval_batch_size: int = 1024  # images per forward when extracting features
    seed: int = 0  # choice of the t-SNE subset and the queries
    outside: Annotated[OutsideWeights, tyro.conf.OmitArgPrefixes] = OutsideWeights()  # a plain state dict's network


def save_png(figure: Figure, path: Path) -> None:
    write_atomic(path, lambda temporary: figure.savefig(temporary, format="png", dpi=120))
    plt.close(figure)


def tsne_figure(features: Tensor, labels: Tensor, classes: list[str], cfg: DiagnoseConfig, title: str) -> Figure:
    chosen = torch.randperm(len(features), generator=torch.Generator().manual_seed(cfg.seed))[: cfg.tsne_images]
    points = F.normalize(features[chosen.to(features.device)], dim=1).cpu().numpy()
    classes_of = labels[chosen.to(labels.device)].cpu().numpy()
    perplexity = min(cfg.perplexity, (len(points) - 1) / 3)
    xy = TSNE(2, perplexity=perplexity, init="pca", random_state=cfg.seed).fit_transform(points)
    figure, axes = plt.subplots(figsize=(7, 6))
    colours = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for c in np.unique(classes_of):
        at = classes_of == c
        axes.scatter(xy[at, 0], xy[at, 1], s=6, color=colours(c % colours.N), label=classes[c])
    if len(classes) <= 20:
        axes.legend(markerscale=3, fontsize=7, loc="best")
    axes.set_title(f"t-SNE of {len(points)} test images ({title})")
    axes.set_xticks([])
    axes.set_yticks([])
    return figure


def display_images(info: DatasetInfo, split: str, index: Tensor, size: int) -> np.ndarray:
    """The images at ``index`` as the backbone saw them (centred square at ``size``), un-normalised:
    N×size×size×3 in [0, 1]."""
    data = open_split(info, split, torch.device("cpu"))
    images = centre_square(size)(data.fetch(index), centre_square_params(data.sizes[index]))
    return images.clamp(0, 1).permute(0, 2, 3, 1).numpy()


def neighbour_figure(f: SplitFeatures, cfg: DiagnoseConfig, size: int, title: str) -> Figure:
    queries = torch.randperm(len(f.test), generator=torch.Generator().manual_seed(cfg.seed + 1))[: cfg.queries]
    similarity = F.normalize(f.test[queries.to(f.test.device)], dim=1) @ F.normalize(f.train, dim=1).T
    scores, nearest = (t.cpu() for t in similarity.topk(cfg.neighbours, dim=1))
    query_labels, train_labels = f.test_labels.cpu()[queries], f.train_labels.cpu()
    query_images = display_images(f.info, f.info.eval_split, queries, size)
    neighbour_images = display_images(f.info, f.info.train_split, nearest.flatten(), size)
    rows, columns = len(queries), cfg.neighbours + 1
    figure, axes = plt.subplots(rows, columns, figsize=(1.3 * columns, 1.45 * rows), squeeze=False)
    for r in range(rows):
        axes[r, 0].imshow(query_images[r])
        axes[r, 0].set_title(f"query: {f.info.class_names[query_labels[r]]}", fontsize=7)
        for k in range(cfg.neighbours):
            label = int(train_labels[nearest[r, k]])
            tile = axes[r, k + 1]
            tile.imshow(neighbour_images[r * cfg.neighbours + k])
            tile.set_title(f"{scores[r, k]:.2f} {f.info.class_names[label] if label >= 0 else '?'}", fontsize=7)
            for edge in tile.spines.values():
                edge.set_color("tab:green" if label == query_labels[r] else "tab:red")
                edge.set_linewidth(3)
    for tile in axes.flat:
        tile.set_xticks([])
        tile.set_yticks([])
    figure.suptitle(f"test queries and their nearest training images by cosine similarity ({title})", fontsize=9)
    figure.tight_layout()
    return figure


def main(args: list[str] | None = None) -> None:
    cfg = parse(DiagnoseConfig, None, args, PROGRAM)
    if min(cfg.tsne_images, cfg.queries, cfg.neighbours, cfg.eval_batch_size) < 1:
        fail(PROGRAM, "--tsne-images, --queries, --neighbours and --eval-batch-size must be at least 1")
    try:
        trained = load_backbone(cfg.weights, cfg.outside, cfg.data)
        data = cfg.data or trained.data_set()
        info = read_info(data)
        if cfg.neighbours > info.splits[info.train_split]["count"]:
            fail(PROGRAM, f"--neighbours {cfg.neighbours}: more than the {data} training split's images")
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        features = extract_splits(trained.network, data, trained.views, device, cfg.eval_batch_size)
    except (CheckpointError, RunFolderError, DatasetError, ImportError, ValueError) as error:
        fail(PROGRAM, str(error))
    if len(features.test) < 4:
        fail(PROGRAM, f"{data}: t-SNE needs at least 4 test images, the split has {len(features.test)}")
    out = cfg.out or trained.folder
    title = trained.name
    tsne = tsne_figure(features.test, features.test_labels, info.class_names, cfg, title)
    grid = neighbour_figure(features, cfg, trained.views.size, title)
    try:
        out.mkdir(parents=True, exist_ok=True)
        save_png(tsne, out / TSNE_FILE)
        save_png(grid, out / NEIGHBOURS_FILE)
    except OSError as error:
        fail(PROGRAM, f"--out {out}: cannot write ({error})")
    print(f"{trained.name}: written {out / TSNE_FILE} and {out / NEIGHBOURS_FILE}")


if __name__ == "__main__":
    main()
