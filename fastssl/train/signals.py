"""Stopping a run on a signal without losing a step.

SLURM and Kubernetes send SIGTERM before they kill a job, submitit sends SIGUSR2 before the
time limit (``--signal=USR2@90``), a user presses Ctrl-C (SIGINT). While a run trains, each
of them only asks it to stop: the loop finishes the step it is in, writes a checkpoint at
that step, prints where it stopped and how to resume, and exits with the shell's
convention for a death by that signal, 128 + its number (SIGINT 130, SIGTERM 143, SIGUSR2
140). A second signal, while the first is being honoured, exits at once by the default
action. A handler that was installed before the run's (submitit's requeue) is called after
the checkpoint is written, so it can requeue the job from it; inside a submitit job the run
leaves SIGTERM to submitit (``honoured``).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

DEFAULT_SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR2")

Handler = Callable[[int, FrameType | None], Any] | int | None


class StopSignals:
    """A context in which the named signals set ``received`` instead of killing the process
    (the first one; a second exits at once)."""

    def __init__(self, names: tuple[str, ...] = DEFAULT_SIGNALS) -> None:
        self.numbers = [signal.Signals[name].value for name in names]
        self.received: int | None = None
        self._previous: dict[int, Handler] = {}

    def __enter__(self) -> StopSignals:
        for number in self.numbers:
            self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)

    def _handle(self, number: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = number
            return
        signal.signal(number, signal.SIG_DFL)  # a second signal: the default action, now
        os.kill(os.getpid(), number)

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else ""

    def hand_over(self) -> None:
        """Call the handler that was installed before ours for the received signal, unless
        it was the default or Python's own Ctrl-C handler (submitit's requeue is the one
        this is for)."""
        previous = self._previous.get(self.received) if self.received is not None else None
        if callable(previous) and previous is not signal.default_int_handler:
            previous(self.received, None)  # type: ignore[arg-type]


def honoured(names: tuple[str, ...]) -> tuple[str, ...]:
    """The signals a run stops on: ``names``, less SIGTERM inside a submitit job (submitit
    exports ``SUBMITIT_EXECUTOR``), whose own handler lets SIGTERM pass so that SLURM's
    SIGTERM at preemption does not end a job that SIGUSR2 is about to requeue."""
    if os.environ.get("SUBMITIT_EXECUTOR"):
        return tuple(name for name in names if name != "SIGTERM")
    return names


def exit_status(number: int) -> int:
    """The shell's status for a process ended by signal ``number``."""
    return 128 + number
