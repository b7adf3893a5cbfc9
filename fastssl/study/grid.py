"""A study grid: the TOML file that names its axes, and the cells it expands to.

    name = "seed003-imagenette"          # the study folder under out_dir
    out_dir = "runs/study"
    methods = ["barlow_twins", "vicregl"]  # recipes
    transformations = ["baseline", "lorot"]  # pipelines.transformations
    alphas = [0.95, 0.25]                 # VICRegL's --method.alpha (other methods have one cell)
    seeds = [1339]                        # --run.seed
    overrides = { "optim.epochs" = 200 }  # options of every cell, as on a recipe's command line
    convention = "lightly"                # optional: every recipe's --convention (another code base's defaults)

    [linear]                              # after training: tools/linear_probe.py
    protocol = "lightly"                  # lightly, mini-ssl, fast, or none (the kNN monitor only)
    epochs = 90                           # optional: the protocol's own otherwise

    [data.imagenette]                     # one table per data set
    path = "data/imagenette-224"
    preset = "imagenette-224"             # the recipes' preset for it
    seed_table = "imagenette"             # optional: the seed's table to compare with
    transformations = ["lorot", "dcl"]    # optional: this data set's columns (NABirds)

    [override.method.vicregl]             # options per value of an axis: method, transformation,
    "optim.batch-size" = 128              # data (by its key) — applied in that order, after the
                                          # grid's overrides and before --run.seed
    [slurm]                               # submitit's SLURM parameters (tools/study.py --executor)
    slurm_partition = "gpu"
    timeout_min = 720

An override's value is what the command line takes: a number, a string, a boolean, or a list
for an option with several values (``"views.crop-scale" = [0.2, 1.0]``). A ``views.`` option
sets every global view of the recipe (BYOL's and Barlow Twins' second view too), as a
transformation does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from pipelines.transformations import LOCAL_VIEW_FIELDS, TRANSFORMATIONS

LINEAR_PROTOCOLS = ("lightly", "mini-ssl", "fast", "none")


class GridError(ValueError):
    """A grid file that cannot be run: one line naming the file and the key."""


@dataclass(frozen=True)
class DataSet:
    key: str  # the grid's name for it ([data.<key>])
    path: Path
    preset: str
    transformations: tuple[str, ...]
    seed_table: str | None = None


@dataclass(frozen=True)
class Cell:
    """One run of the study: a method (and α) with a transformation on a data set, one seed."""

    data: DataSet
    method: str
    transformation: str
    alpha: float | None
    seed: int
    overrides: tuple[tuple[str, Any], ...]  # option → value, in the order applied

    @property
    def row(self) -> str:
        """The table row it belongs to: the method, with α where it has one."""
        return self.method if self.alpha is None else f"{self.method} α={self.alpha:g}"

    @property
    def name(self) -> str:
        """Its run folder's name."""
        alpha = "" if self.alpha is None else f"-a{self.alpha:g}"
        return f"{self.data.key}--{self.method}{alpha}--{self.transformation}--s{self.seed}"


@dataclass(frozen=True)
class Grid:
    file: Path
    name: str
    out_dir: Path
    cells: list[Cell]
    linear_protocol: str
    linear_epochs: int | None
    convention: str | None = None  # every cell's recipe convention (--convention)
    slurm: dict[str, Any] = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        return self.out_dir / self.name


def _expect(file: Path, key: str, value: Any, kind: type, what: str) -> Any:
    if not isinstance(value, kind):
        raise GridError(f"{file}: '{key}' must be {what}, not {value!r}")
    return value


def _names(file: Path, key: str, value: Any, known: list[str] | None = None) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise GridError(f"{file}: '{key}' must be a non-empty list of names")
    if known is not None:
        for name in value:
            if name not in known:
                raise GridError(f"{file}: '{key}': no '{name}' (known: {', '.join(known)})")
    return tuple(value)


def _overrides(file: Path, key: str, table: Any) -> tuple[tuple[str, Any], ...]:
    if not isinstance(table, dict):
        raise GridError(f"{file}: '{key}' must be a table of option = value")
    for option, value in table.items():
        if option.startswith("-") or not all(part for part in option.split(".")):
            raise GridError(f"{file}: '{key}': option '{option}' is written without dashes, e.g. \"optim.epochs\"")
        if isinstance(value, dict):
            raise GridError(f"{file}: '{key}.{option}': a value, not a table")
        if option in ("data", "run.out-dir", "run.name", "run.seed"):
            raise GridError(f"{file}: '{key}': '{option}' is set by the grid itself")
    return tuple(table.items())


def read_grid(file: Path, recipes: list[str]) -> Grid:
    """The grid in ``file`` (TOML), checked against the known ``recipes``; ``GridError``
    naming the file and the first key that is wrong."""
    try:
        raw = tomllib.loads(file.read_text())
    except OSError as error:
        raise GridError(f"{file}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise GridError(f"{file}: not valid TOML ({error})") from None
    known = {"name", "out_dir", "methods", "transformations", "alphas", "seeds", "overrides",
             "convention", "linear", "data", "override", "slurm"}
    for key in raw:
        if key not in known:
            raise GridError(f"{file}: unknown key '{key}' (keys: {', '.join(sorted(known))})")
    name = _expect(file, "name", raw.get("name", file.stem), str, "a string")
    out_dir = Path(_expect(file, "out_dir", raw.get("out_dir", "runs/study"), str, "a path"))
    methods = _names(file, "methods", raw.get("methods"), recipes)
    transformations = _names(file, "transformations", raw.get("transformations", ["baseline"]), list(TRANSFORMATIONS))
    alphas = raw.get("alphas", [])
    if not isinstance(alphas, list) or not all(isinstance(a, int | float) and 0 <= a <= 1 for a in alphas):
        raise GridError(f"{file}: 'alphas' must be a list of numbers in [0, 1]")
    seeds = raw.get("seeds", [1339])
    integers = all(isinstance(s, int) and not isinstance(s, bool) for s in seeds) if isinstance(seeds, list) else False
    if not seeds or not integers:
        raise GridError(f"{file}: 'seeds' must be a non-empty list of integers")
    convention = raw.get("convention")
    if convention is not None:
        _expect(file, "convention", convention, str, "a convention's name")
    linear = raw.get("linear", {})
    protocol = linear.get("protocol", "fast")
    if protocol not in LINEAR_PROTOCOLS:
        raise GridError(f"{file}: 'linear.protocol' must be one of {', '.join(LINEAR_PROTOCOLS)}, not {protocol!r}")
    epochs = linear.get("epochs")
    if epochs is not None and (not isinstance(epochs, int) or epochs < 1):
        raise GridError(f"{file}: 'linear.epochs' must be a positive integer")
    common = _overrides(file, "overrides", raw.get("overrides", {}))
    per_axis = raw.get("override", {})
    for axis in per_axis:
        if axis not in ("method", "transformation", "data"):
            raise GridError(f"{file}: 'override.{axis}': the axes are method, transformation and data")

    def axis_overrides(axis: str, value: str) -> tuple[tuple[str, Any], ...]:
        return _overrides(file, f"override.{axis}.{value}", per_axis.get(axis, {}).get(value, {}))

    data_sets = raw.get("data")
    if not isinstance(data_sets, dict) or not data_sets:
        raise GridError(f"{file}: '[data.<name>]' tables are missing: a grid needs at least one data set")
    cells = []
    for key, entry in data_sets.items():
        where = f"data.{key}"
        if not isinstance(entry, dict) or "path" not in entry or "preset" not in entry:
            raise GridError(f"{file}: '{where}' needs a path and a preset")
        columns = _names(file, f"{where}.transformations", entry.get("transformations", list(transformations)),
                         list(TRANSFORMATIONS))
        data = DataSet(key, Path(entry["path"]), _expect(file, f"{where}.preset", entry["preset"], str, "a string"),
                       columns, entry.get("seed_table"))
        for method in methods:
            for transformation in columns:
                options = (common + axis_overrides("method", method) + axis_overrides("transformation", transformation)
                           + axis_overrides("data", key))
                for alpha in (alphas or [None]) if method == "vicregl" else [None]:
                    for seed in seeds:
                        cells.append(Cell(data, method, transformation, alpha, seed, options))
    slurm = raw.get("slurm", {})
    if not isinstance(slurm, dict):
        raise GridError(f"{file}: '[slurm]' must be a table of submitit parameters")
    return Grid(file, name, out_dir, cells, protocol, epochs, convention, slurm)


def option_args(option: str, value: Any) -> list[str]:
    """``"optim.batch-size", 128`` → ``["--optim.batch-size", "128"]`` (lists: several values;
    booleans: tyro's flag pair, ``--run.knn-before-training`` / ``--run.no-knn-before-training``)."""
    if isinstance(value, bool):
        prefix, _, name = option.rpartition(".")
        return [f"--{prefix + '.' if prefix else ''}{'' if value else 'no-'}{name}"]
    values = value if isinstance(value, list | tuple) else [value]
    return [f"--{option}", *(str(v) for v in values)]


def every_view_args(setting: str, value: Any, view_fields: list[str]) -> list[str]:
    """The options that set ``setting`` (``crop_scale`` or ``crop-scale``) of every global view field."""
    args: list[str] = []
    for view in view_fields:
        if view not in LOCAL_VIEW_FIELDS:
            args += option_args(f"{view.replace('_', '-')}.{setting.replace('_', '-')}", value)
    return args


def transformation_args(transformation: str, view_fields: list[str]) -> list[str]:
    """The command-line options that give each global view field the transformation's settings."""
    return [arg for setting, value in TRANSFORMATIONS[transformation].items()
            for arg in every_view_args(setting, value, view_fields)]
