"""The one exception family for user-facing errors.

Library code raises :class:`LongctxError` (or a subclass) with a one-line message that names the
problem; the CLI turns it into a one-line error and exit code 2. Anything else is a bug.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LongctxError(Exception):
    """A problem the user can fix: bad input, missing file, unknown name, corrupt run folder."""


class UnknownNameError(LongctxError):
    """An unknown task / runner / model / metric name, with did-you-mean suggestions."""

    def __init__(self, kind: str, name: str, known: Iterable[str]):
        known = sorted(known)
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        listing = "" if close else f"; known: {', '.join(known) or '(none)'}"
        super().__init__(f"unknown {kind} {name!r}{hint}{listing}")
        self.kind, self.name, self.suggestions = kind, name, close


class RunnerError(Exception):
    """A failure of the model or engine for one request (timeout, server error, context overflow).

    Recorded on the result as ``error``; never scored as an answer.
    """


class SweepStopped(LongctxError):
    """A sweep ended before its plan was done; finished results are saved, the rest stay pending.

    ``exit_code`` is what ``longctx sweep`` exits with; ``outcome`` (set by the sweep) says what was
    recorded before it stopped.
    """

    exit_code = 3
    outcome: object = None


class EngineGone(SweepStopped):
    """The engine stopped answering: a launched server died, or an endpoint refused, reset or dropped
    connections too many times in a row. Never recorded as a sample's error; rerun to resume."""

    exit_code = 3


class TooManyErrors(SweepStopped):
    """More samples failed than ``--max-errors`` allows."""

    exit_code = 4


class CostCapReached(SweepStopped):
    """The next sample would take the run folder's spend past ``--max-cost-usd``."""

    exit_code = 5
