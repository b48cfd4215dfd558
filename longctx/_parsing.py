"""Parsing of sweep specifications: lengths, depths, ``-O key=value`` options."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from longctx._errors import LongctxError

_UNITS = {"": 1, "k": 1024, "m": 1024 * 1024}


def parse_length(text: str) -> int:
    """``4k`` -> 4096, ``1M`` -> 1048576, ``1000`` -> 1000, ``0k`` -> 0.

    K and M are binary (RULER's "4K" is 4096 tokens, "128K" is 131072).
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*", text)
    if not match:
        raise LongctxError(f"bad length {text!r}: use tokens like 4096, 4k or 1M")
    value = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if value != int(value):
        raise LongctxError(f"bad length {text!r}: not a whole number of tokens")
    return int(value)


def parse_lengths(text: str) -> tuple[int, ...]:
    """Comma-separated lengths, sorted, duplicates removed."""
    items = [t for t in text.split(",") if t.strip()]
    if not items:
        raise LongctxError("--lengths is empty")
    return tuple(sorted({parse_length(t) for t in items}))


def parse_depths(text: str) -> tuple[float, ...]:
    """``0:100:11`` (start:stop:count, inclusive, evenly spaced) or ``0,25,50`` (percent)."""
    text = text.strip()
    try:
        if ":" in text:
            parts = text.split(":")
            if len(parts) != 3:
                raise ValueError
            start, stop, count = float(parts[0]), float(parts[1]), int(parts[2])
            if count < 1:
                raise ValueError
            values = [start] if count == 1 else [start + (stop - start) * i / (count - 1) for i in range(count)]
        else:
            values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise LongctxError(f"bad --depths {text!r}: use start:stop:count (0:100:11) or a list (0,50,100)") from None
    if not values or any(not 0 <= v <= 100 for v in values):
        raise LongctxError(f"bad --depths {text!r}: depths are percentages in [0, 100]")
    return tuple(sorted({round(v, 2) for v in values}))


def parse_options(pairs: tuple[str, ...] | list[str], flag: str = "-O") -> dict[str, str]:
    """``key=value`` pairs into a dict (values stay strings; the plug-in's Options coerce them)."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise LongctxError(f"bad {flag} {pair!r}: use key=value")
        out[key.strip()] = value
    return out


def parse_endpoints(values: str | Sequence[str] | None, file: str | Path | None = None) -> tuple[str, ...]:
    """Endpoint URLs from ``--endpoint`` values and an ``--endpoints-file`` (one per line, blank lines
    and ``#`` comments skipped), in order, duplicates dropped."""
    items = [values] if isinstance(values, str) else list(values or ())
    if file is not None:
        try:
            text = Path(file).expanduser().read_text(encoding="utf-8")
        except OSError as exc:
            raise LongctxError(f"--endpoints-file {file}: {exc.strerror or exc}") from None
        lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
        items += [line for line in lines if line]
        if not any(lines):
            raise LongctxError(f"--endpoints-file {file} lists no server")
    return tuple(dict.fromkeys(str(v).strip() for v in items if str(v).strip()))
