"""What ``python recipes/<name>.py`` does: read the command line, start a run or resume one,
train, print the summary.

Besides the configuration's own options (``--optim.epochs 100``, all of them in ``--help``)
a recipe takes the options that say where its settings come from:

    --preset NAME          the defaults of a data set or variant (the first preset when absent)
    --convention NAME      on top of the preset, another code base's defaults (e.g. lightly)
    --config FILE          a saved configuration (a run's config.yaml); options apply on top
    --resume               continue the run named by --data, --run.name and --run.out-dir
    --resume-from RUN_DIR  continue the run in that folder
    --resume-override      let a resumed run change settings that change the experiment

A resumed run takes every setting from its checkpoint. Options given with it may change
what is logged, evaluated and when to stop (``config.BOOKKEEPING``), and may let ``--optim.epochs``
grow; any other change (the model, views, method, optimiser, data, seed or precision) is
refused in one line naming each option with both values, unless ``--resume-override``,
which is recorded in the run's history.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastssl.cli import fail, parse
from fastssl.config import BOOKKEEPING, ConfigError, TrainConfig, dotted, from_json, to_json, validate
from fastssl.recipes import Recipe, UnknownRecipe, get
from fastssl.run_folder import (
    CHECKPOINT,
    RunFolderError,
    checkpoint_in,
    data_fingerprint,
    locate,
    read_config,
    run_dir_of,
    write_config,
)
from fastssl.train import checkpoint
from fastssl.train.build import RunError, build
from fastssl.train.checkpoint import DamagedCheckpoint
from fastssl.train.loop import Loop, Stopped, standard_error_pct
from fastssl.weights import CheckpointError
from pipelines.dataset import DatasetError


def launch_options(program: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=program, add_help=False, allow_abbrev=False)
    parser.add_argument("--preset")
    parser.add_argument("--convention")
    parser.add_argument("--config", type=Path)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--resume-from", type=Path)
    parser.add_argument("--resume-override", action="store_true")
    return parser


def main(name: str, args: list[str] | None = None) -> dict[str, Any]:
    """Run recipe ``name`` with the command line ``args`` (default: ``sys.argv``); the summary."""
    program = f"{name}.py"
    argv = list(sys.argv[1:] if args is None else args)
    try:
        recipe = get(name)
        options, rest = launch_options(program).parse_known_args(argv)
        if "-h" in rest or "--help" in rest:
            print(help_preamble(recipe))
        return run(recipe, options, rest, program)
    except Stopped as stop:  # by a signal, its checkpoint written
        print(f"{program}: {stop}", file=sys.stderr)
        raise SystemExit(stop.status) from None
    except (RunError, DatasetError, RunFolderError, ConfigError, UnknownRecipe, CheckpointError, ValueError,
            ImportError) as error:
        fail(program, error)


def help_preamble(recipe: Recipe) -> str:
    return (f"{recipe.name}: {recipe.summary} (declared in fastssl/methods/{recipe.name}.py)\n"
            f"presets (--preset NAME, the first is the default): {', '.join(recipe.presets)}\n"
            f"conventions (--convention NAME, on top of the preset): {', '.join(recipe.conventions) or 'none'}\n"
            "also: --config FILE (a run's config.yaml), --resume, --resume-from RUN_DIR, --resume-override")


def run(recipe: Recipe, options: argparse.Namespace, rest: list[str], program: str) -> dict[str, Any]:
    resuming = options.resume or options.resume_from is not None
    for given, flag in ((options.preset, "--preset"), (options.convention, "--convention")):
        if given is not None and (resuming or options.config):
            raise RunError(f"{flag}: a resumed or relaunched run takes its settings from the run")
    if options.config is not None and resuming:
        raise RunError("--config starts a new run from saved settings; --resume continues one: give one of them")
    if options.resume_override and not resuming:
        raise RunError("--resume-override goes with --resume or --resume-from")
    presets = recipe.presets
    if options.preset is not None and options.preset not in presets:
        raise RunError(f"--preset {options.preset}: {recipe.name} has {', '.join(presets)}")
    if options.convention is not None and options.convention not in recipe.conventions:
        raise RunError(f"--convention {options.convention}: {recipe.name} has "
                       f"{', '.join(recipe.conventions) or 'none'}")
    description = f"{recipe.name}: {recipe.summary}"
    data_given = any(arg == "--data" or arg.startswith("--data=") for arg in rest)
    resumed: Resumed | None = None
    if options.config is not None:
        default = saved_config(recipe, options.config, locate_data=not data_given)
    elif options.resume_from is not None:
        resumed = resume_state(recipe, checkpoint_in(options.resume_from), locate_data=not data_given)
        default = resumed.cfg
    else:
        default = recipe.with_convention(presets[options.preset or next(iter(presets))], options.convention)
    cfg = parse(recipe.train_config, default, rest, program, description)
    if options.resume and resumed is None:  # the run named by --data, --run.name and --run.out-dir
        folder = run_dir_of(cfg, recipe.name)
        if not any(folder.glob("checkpoint*.pt")):
            raise RunError(f"--resume: {folder / CHECKPOINT} does not exist")
        resumed = resume_state(recipe, checkpoint_in(folder), locate_data=False)  # --data names it
        cfg = parse(recipe.train_config, resumed.cfg, rest, program, description)  # unset options keep the run's
    if resumed is not None:  # the run stays where its folder is
        run_dir = resumed.run_dir
        cfg = absolute_paths(dataclasses.replace(cfg, run=dataclasses.replace(
            cfg.run, out_dir=run_dir.parent, name=run_dir.name)))
        changes = resumed_changes(resumed, cfg, options.resume_override)
    else:
        run_dir = run_dir_of(cfg, recipe.name)
        if any(run_dir.glob("checkpoint*.pt")):
            raise RunError(f"{run_dir} already holds a run: pass --resume to continue it, "
                           "or --run.name to start another")
        cfg = absolute_paths(cfg)
    for warning in validate(cfg):
        print(f"{program}: warning: {warning}", file=sys.stderr)
    writable(run_dir)
    if resumed is None:
        set_aside_leftovers(run_dir)
    parts = build(recipe, cfg)
    loop = Loop(parts, run_dir, resume=None if resumed is None else resumed.state)
    if resumed is not None:
        loop.record_resume(changes, options.resume_override)
    if loop.is_main:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            write_config(run_dir, recipe.name, cfg)
        except OSError as error:
            raise RunError(f"{run_dir}: cannot write ({error.strerror or error})") from error
    summary = loop.fit()
    if loop.is_main:
        print(format_summary(summary))
        print(f"  run folder: {run_dir}")
    return json.loads(json.dumps(summary))


def writable(run_dir: Path) -> None:
    """``RunError`` unless the run folder is, or can be made, a writable folder: said before
    any work, not after the first epoch."""
    existing = run_dir
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise RunError(f"--run.out-dir: {existing} is a file, not a folder (the run would be {run_dir})")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunError(f"--run.out-dir: {existing} is not writable (the run would be {run_dir})")


def set_aside_leftovers(run_dir: Path) -> None:
    """Move what a run that never wrote a checkpoint left in ``run_dir`` (its metrics, a
    summary, its config.yaml) into ``run_dir/abandoned-<time>/``, so a new run starts its
    records afresh and nothing is lost; say so in one line."""
    leftovers = [p for p in run_dir.iterdir() if not p.name.startswith("abandoned-")] if run_dir.is_dir() else []
    if not leftovers:
        return
    aside = run_dir / time.strftime("abandoned-%Y%m%d-%H%M%S")
    aside.mkdir()
    for path in leftovers:
        path.rename(aside / path.name)
    print(f"fastssl: {run_dir} held a run without a checkpoint: its files are now in {aside}", file=sys.stderr)


def saved_config(recipe: Recipe, path: Path, locate_data: bool) -> TrainConfig:
    """The configuration of a ``config.yaml``, which must be this recipe's; ``locate_data``:
    find its data set (not when the command line gives another)."""
    record = read_config(path, locate_data)
    if record["recipe"] != recipe.name:
        raise RunError(f"--config {path}: a {record['recipe']} run; relaunch it with recipes/{record['recipe']}.py")
    return for_this_call(stored_config(recipe, record["config"], f"--config {path}"))


# Settings earlier versions stored that are no longer settings: ``resume`` became --resume,
# ``run.tensorboard`` became ``run.trackers``.
RETIRED = (("resume",), ("run", "tensorboard"))


def stored_config(recipe: Recipe, values: dict[str, Any], where: str) -> TrainConfig:
    values = {key: dict(value) if isinstance(value, dict) else value for key, value in values.items()}
    for *parents, name in RETIRED:
        settings = values
        for parent in parents:
            settings = settings.get(parent, {})
        settings.pop(name, None)
    try:
        return from_json(recipe.views.config, values, method=recipe.config)
    except (ConfigError, TypeError) as error:
        raise RunError(f"{where}: its settings do not fit the {recipe.name} recipe ({error})") from error


def for_this_call(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` without its stop options: they are for the call that gave them, so a resumed
    or relaunched run goes on unless told again."""
    return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, stop_after_steps=None, stop_after_minutes=None))


@dataclass
class Resumed:
    state: dict[str, Any]  # the checkpoint's contents
    cfg: TrainConfig  # the run's settings, where its folder is now, without stop options
    run_dir: Path  # absolute
    data_meta_sha256: str | None  # the fingerprint of its data set (older checkpoints: None)


def resume_state(recipe: Recipe, path: Path, locate_data: bool) -> Resumed:
    """The run of checkpoint ``path`` and its settings; ``locate_data``: find its data set
    (absolute path first, then relative to the run folder), unless the command line names it."""
    run_dir = path.resolve().parent
    try:
        state = checkpoint.load(path)
        values, method = dict(state["config"]), state["method_name"]
    except DamagedCheckpoint as error:
        raise RunError(f"--resume: {error}") from error
    except (KeyError, TypeError) as error:
        raise RunError(f"--resume: {path}: not a fastssl checkpoint (no {error})") from error
    if method != recipe.name:
        raise RunError(f"--resume: {path} is a {method} run; resume it with recipes/{method}.py")
    if locate_data:
        values["data"] = str(locate(values["data"], state.get("relative_paths", {}).get("data"), run_dir))
    cfg = stored_config(recipe, values, str(path))
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, out_dir=run_dir.parent, name=run_dir.name))
    return Resumed(state, for_this_call(cfg), run_dir, state.get("data_meta_sha256"))


def option(name: str) -> str:
    """The command-line spelling of a dotted setting: ``optim.lr_per_256`` → ``--optim.lr-per-256``."""
    return "--" + name.replace("_", "-")


def resumed_changes(resumed: Resumed, cfg: TrainConfig, override: bool) -> dict[str, list[Any]]:
    """The settings ``cfg`` changes from the run's own (setting → [stored, new]); a
    ``RunError`` naming every change that would change the experiment, unless ``override``.
    Bookkeeping may change (``config.BOOKKEEPING``) and ``optim.epochs`` may grow."""
    before, after = dotted(to_json(resumed.cfg)), dotted(to_json(cfg))
    changes = {name: [before[name], after[name]] for name in after if before.get(name) != after[name]}
    if "data" in changes and same_data_set(resumed, cfg.data):
        del changes["data"]  # the same data set, reached by another path
    refused = [name for name, (old, new) in changes.items()
               if name not in BOOKKEEPING and not (name == "optim.epochs" and new > old)]
    if refused and not override:
        listed = ", ".join(f"{option(name)} {changes[name][0]} → {changes[name][1]}" for name in refused)
        raise RunError(f"--resume would change the experiment: {listed} (the run's values first; "
                       "--resume-override changes them anyway)")
    return changes


def same_data_set(resumed: Resumed, data: Path) -> bool:
    """Whether ``data`` is the resumed run's data set: the same folder, or one whose
    ``meta.json`` (which holds every array's checksum) is the run's, wherever it is now."""
    stored = resumed.cfg.data
    if data.resolve() == stored.resolve():
        return True
    fingerprint = resumed.data_meta_sha256 or data_fingerprint(stored)
    return fingerprint is not None and data_fingerprint(data) == fingerprint


def absolute_paths(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with its paths absolute: a stored run works from any directory."""
    return dataclasses.replace(cfg, data=cfg.data.resolve(),
                               run=dataclasses.replace(cfg.run, out_dir=cfg.run.out_dir.resolve()))


def format_summary(summary: dict[str, Any]) -> str:
    stopped = summary["stopped_at"]
    where = "" if stopped is None else f", stopped in epoch {stopped['epoch']} at step {stopped['step']}"
    lines = [f"{summary['method']} on {summary['data']}: {summary['epochs_done']} epochs done{where}"
             + ("" if summary["finished"] else " (--resume continues)")]
    count = summary["knn_test_images"]
    for name, knn in summary["knn"].items():
        parts = []
        if "before_training" in knn:
            parts.append(f"before {knn['before_training']:.2f}")
        if "last" in knn:
            parts.append(f"last {knn['last']:.2f} (epoch {knn['last_epoch']})")
            parts.append(f"best {knn['best']:.2f} (epoch {knn['best_epoch']})")
        if "before_training" in knn and "last" in knn:
            gain = knn["last"] - knn["before_training"]
            se = standard_error_pct(knn["last"], count)
            parts.append(f"gain {gain:+.2f} = {gain / se:.1f} standard errors")
        lines.append(f"  kNN {name:8s} % on {count} test images: " + (", ".join(parts) or "not evaluated"))
    if summary["online_probe_test"] is not None:
        lines.append(f"  online linear probe test %: {summary['online_probe_test']:.2f} "
                     f"(at epoch {summary['online_probe_epoch']})")
    if summary["final_loss"] is not None:
        collapse = " — the embeddings COLLAPSED" if summary["collapse"] == "collapsed" else ""
        lines.append(f"  final loss {summary['final_loss']:.4f}{collapse}")
    lines.append(
        f"  {summary['images_per_s']:.0f} images/s training, wall time {summary['wall_time_s']:.0f} s, "
        f"peak memory {summary['peak_memory_mib']:.0f} MiB ({summary['peak_memory_kind']}), "
        f"{summary['device']}, {summary['mixed_precision']} precision"
    )
    return "\n".join(lines)
