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
    """tyro's usage error as one line: the first section of its text (not the title, which
    the text repeats), and for unknown options the options alone (not the values that
    followed them) with the closest known option. tyro draws a box, or on some terminals
    plain text with dashed rules, with or without colour codes."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", boxed)
    sections: list[list[str]] = [[]]
    title = ""
    for line in plain.splitlines():
        row = line.strip().strip("│").strip()
        if row.startswith("╭"):
            title = row.strip("╭╮─ ")
        elif not row.strip("─-╰╯ "):
            if sections[-1]:
                sections.append([])
        else:
            sections[-1].append(row)
    sections = [section for section in sections if section]
    if not title and len(sections) > 1 and len(sections[0]) == 1:  # the plain style's title
        title = sections.pop(0)[0]
    first = " ".join(sections[0]) if sections else title
    unknown = re.match(r"Unrecognized options?: (.*)", first)
    if not unknown:
        return " ".join(first.split())
    options = [word for word in unknown.group(1).split(", ") if word.startswith("-")]
    hints = []
    for section in sections[1:]:
        similar = re.match(r"(?:Arguments similar to (\S+)|Perhaps you meant):", section[0])
        if similar and len(section) > 1:
            meant = f" for {similar.group(1)}" if similar.group(1) else ""
            hints.append(f"did you mean {section[1].split()[0]}{meant}?")
    label = "unrecognized option" + ("s " if len(options) > 1 else " ")
    return label + ", ".join(options or [unknown.group(1)]) + ("; " + "; ".join(hints) if hints else "")


def parse(
    config_type: type[T], default: T | None, args: Sequence[str] | None, program: str, description: str | None = None
) -> T:
    """``tyro.cli`` whose usage errors come out as one line (tyro draws a box)."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            # default=None is no default; tyro's stubs would make the result T | None for it
            return cast(T, tyro.cli(config_type, default=default, args=args, prog=program, description=description))
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            fail(program, _one_line(captured.getvalue()) or "invalid arguments")
        sys.stderr.write(captured.getvalue())
        raise
