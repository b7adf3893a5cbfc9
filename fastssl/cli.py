"""Command-line parsing from dataclasses (tyro), with one-line errors and exit status 2."""

from __future__ import annotations

import contextlib
import io
import re
import sys
from collections.abc import Sequence
from typing import NoReturn, TypeVar, cast

import tyro

T = TypeVar("T")


def fail(program: str, message: str | Exception) -> NoReturn:
    """Print ``program: error: message`` on one line and exit with status 2."""
    text = " ".join(str(message).split())
    print(f"{program}: error: {text}", file=sys.stderr)
    raise SystemExit(2)


def _one_line(boxed: str) -> str:
    text = re.sub(r"[│╭╮╰╯─]+", " ", boxed)
    text = re.sub(r"(Argument helptext|For full helptext).*", "", text, flags=re.S)
    return " ".join(text.split())


def parse(config_type: type[T], default: T | None, args: Sequence[str] | None, program: str) -> T:
    """``tyro.cli`` whose usage errors come out as one line (tyro draws a box)."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            # default=None is no default; tyro's stubs would make the result T | None for it
            return cast(T, tyro.cli(config_type, default=default, args=args, prog=program))
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            fail(program, _one_line(captured.getvalue()) or "invalid arguments")
        sys.stderr.write(captured.getvalue())
        raise


def parse_with_presets(
    config_type: type[T], presets: dict[str, T], args: Sequence[str] | None, program: str
) -> T:
    """``--preset NAME`` picks the defaults (the first preset when absent); every field can
    still be overridden after it."""
    args = list(sys.argv[1:] if args is None else args)
    name = next(iter(presets))
    if "--preset" in args:
        at = args.index("--preset")
        if at + 1 >= len(args) or args[at + 1] not in presets:
            fail(program, f"--preset takes one of: {', '.join(presets)}")
        name = args[at + 1]
        del args[at : at + 2]
    if "-h" in args or "--help" in args:
        print(f"presets (--preset NAME): {', '.join(presets)}; showing defaults of '{name}'")
    return parse(config_type, presets[name], args, program)
