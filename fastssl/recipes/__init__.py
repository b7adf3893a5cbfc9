"""The recipe registry: each method declares, once, beside its code, the settings it trains
with and where they come from — its configuration class, its views, its optimiser and its
presets — and everything else (the recipe scripts, the tools, the benchmarks, the tests)
looks a recipe up by name.

    from fastssl.recipes import get
    recipe = get("mocov2")
    cfg = recipe.preset("cifar10", data=Path("data/cifar10"))

A declaration (at the end of ``fastssl/methods/<name>.py``)::

    register("byol", BYOL, BYOLConfig, summary="BYOL, cosine EMA to 1, asymmetric views",
             views=BYOL_PAPER_PAIR, presets=mini_ssl_tiny_imagenet(BYOLConfig))

Every recipe gets the data-set presets of ``defaults.dataset_presets`` (the first,
``cifar10``, is the default); ``presets`` adds recipe-specific ones or changes those.
``conventions`` are named sets of changes (in ``Preset.changes``' form) that make the recipe
follow another code base's defaults on top of any preset, e.g. ``lightly``
(``fastssl/recipes/lightly.py``)::

    cfg = get("simclr").preset("imagenette-224", convention="lightly")
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import tyro

from fastssl.config import ModelConfig, OptimConfig, TrainConfig, with_changes, with_views


@dataclass(frozen=True)
class Views:
    """A recipe's views: the ``TrainConfig`` (sub)class whose fields hold them, and their
    defaults (field → ``ViewConfig``, or a count such as ``local_crops``)."""

    config: type[TrainConfig]
    defaults: Mapping[str, Any]


@dataclass(frozen=True)
class Preset:
    """A preset made from another: ``base``'s configuration with ``changes`` (a field → its
    new value, or a nested configuration → a mapping of changes to it) and ``every_view``
    (changes made to every ``ViewConfig``, sizes scaled together)."""

    base: str
    changes: Mapping[str, Any] = field(default_factory=dict)
    every_view: Mapping[str, Any] = field(default_factory=dict)

    def made_from(self, presets: Mapping[str, TrainConfig]) -> TrainConfig:
        cfg = with_views(presets[self.base], **self.every_view) if self.every_view else presets[self.base]
        return with_changes(cfg, self.changes)


def preset(base: str, every_view: Mapping[str, Any] | None = None, **changes: Any) -> Preset:
    return Preset(base, changes, every_view or {})


@dataclass(frozen=True)
class Recipe:
    name: str  # recipes/<name>.py, fastssl/methods/<name>.py
    method: type  # a fastssl.methods.base.Method, built as method(cfg.method, backbone)
    config: type  # the method's settings (a frozen dataclass)
    summary: str  # one line: the method, and whose recipe the defaults are
    views: Views
    optim: OptimConfig
    model: ModelConfig
    extra_presets: Mapping[str, Preset]
    conventions: Mapping[str, Mapping[str, Any]]  # name → changes, as Preset.changes, applied on top of a preset

    @property
    def train_config(self) -> type[TrainConfig]:
        """The configuration class the command line parses: ``TrainConfig`` or the subclass
        holding this recipe's views, with its method settings."""
        return self.views.config[self.config]  # type: ignore[index]

    @property
    def presets(self) -> dict[str, TrainConfig]:
        """Every preset, the default first; their ``data`` is missing (the user gives it)."""
        from fastssl.recipes.defaults import dataset_presets

        base = self.views.config(data=tyro.MISSING, method=self.config(), optim=self.optim, model=self.model,
                                 **self.views.defaults)
        presets = dataset_presets(base)
        for name, made in self.extra_presets.items():
            presets[name] = made.made_from(presets)
        return presets

    def preset(self, name: str | None = None, convention: str | None = None, **changes: Any) -> TrainConfig:
        """Preset ``name`` (default: the first), then ``convention``'s changes, then ``changes``
        (as ``Preset``'s)."""
        presets = self.presets
        cfg = presets[name or next(iter(presets))]
        return with_changes(self.with_convention(cfg, convention), changes)

    def with_convention(self, cfg: TrainConfig, convention: str | None) -> TrainConfig:
        """``cfg`` with the changes of ``convention`` (None: none); a ``ValueError`` naming this
        recipe's conventions if it has no such one."""
        if convention is None:
            return cfg
        if convention not in self.conventions:
            raise ValueError(f"{self.name} has no convention '{convention}' "
                             f"(conventions: {', '.join(self.conventions) or 'none'})")
        return with_changes(cfg, self.conventions[convention])


_REGISTRY: dict[str, Recipe] = {}
_NOT_RECIPES = {"base", "memory", "distillation"}  # modules of fastssl/methods that declare no method


def register(
    name: str, method: type, config: type, *, summary: str, views: Views | None = None,
    optim: OptimConfig | None = None, model: ModelConfig | None = None, presets: Mapping[str, Preset] | None = None,
    conventions: Mapping[str, Mapping[str, Any]] | None = None,
) -> Recipe:
    """Declare recipe ``name``: ``method`` with its settings class ``config``, its ``views``
    (default: two Mini-SSL views of each image), its optimiser (default: Mini-SSL's SGD),
    its backbone (default: Mini-SSL's CIFAR ResNet-18 with split-BN), ``presets`` beyond
    the data-set ones and its ``conventions`` (name → changes to any preset)."""
    from fastssl.recipes.defaults import MINI_SSL_VIEWS

    recipe = Recipe(name, method, config, summary, views or MINI_SSL_VIEWS, optim or OptimConfig(),
                    model or ModelConfig(), presets or {}, conventions or {})
    _REGISTRY[name] = recipe
    return recipe


class UnknownRecipe(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no recipe '{name}' (recipes: {', '.join(names())})")


def get(name: str) -> Recipe:
    """The recipe declared as ``name`` (in ``fastssl/methods/<name>.py``)."""
    if name not in _REGISTRY and name.isidentifier() and name not in _NOT_RECIPES:
        try:
            importlib.import_module(f"fastssl.methods.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"fastssl.methods.{name}":
                raise
    if name not in _REGISTRY:
        raise UnknownRecipe(name)
    return _REGISTRY[name]


def names() -> list[str]:
    """Every declared recipe, by name."""
    import fastssl.methods

    for module in pkgutil.iter_modules(fastssl.methods.__path__):
        if module.name not in _NOT_RECIPES:
            importlib.import_module(f"fastssl.methods.{module.name}")
    return sorted(_REGISTRY)
