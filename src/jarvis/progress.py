"""Progress bars (tqdm) that stay readable in SLURM log files.

On a terminal they are ordinary tqdm bars. When stderr is not a terminal (a batch job's log file, a pipe), tqdm
would still redraw with carriage returns several times a second, which a log file keeps as one ever-growing line.
There each update becomes one plain line, at most one per ``JARVIS_PROGRESS_INTERVAL`` seconds (default 30), plus
the final state. The noisy sub-second bars of the libraries (transformers' weight loading, the Hub's per-file
bars) are switched off in that case by :func:`quiet_library_bars`; the Hub's overall download bar uses
:class:`Progress` instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any, TextIO

from tqdm.std import tqdm as _std_tqdm

DEFAULT_INTERVAL_S = 30.0


def interactive(stream: TextIO | None = None) -> bool:
    stream = sys.stderr if stream is None else stream
    return bool(getattr(stream, "isatty", lambda: False)())


def interval_s() -> float:
    raw = os.environ.get("JARVIS_PROGRESS_INTERVAL", str(DEFAULT_INTERVAL_S))
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"JARVIS_PROGRESS_INTERVAL={raw!r} is not a number of seconds") from None
    return max(value, 0.0)


class _Lines:
    """A file for tqdm that turns every carriage-return redraw into one newline-terminated line."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        for part in text.replace("\n", "\r").split("\r"):
            if part.strip():
                self.stream.write(part.rstrip() + "\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


class Progress(_std_tqdm):
    """tqdm with log-file defaults when stderr is not a terminal (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        stream = kwargs.get("file") or sys.stderr
        if not interactive(stream):
            kwargs["file"] = _Lines(stream)
            kwargs.setdefault("mininterval", interval_s())
            kwargs.setdefault("ascii", True)
            kwargs.setdefault("ncols", 100)
            kwargs.setdefault("dynamic_ncols", False)
        super().__init__(*args, **kwargs)


def progress(iterable: Iterable[Any] | None = None, **kwargs: Any) -> Any:
    """A progress bar over ``iterable`` (or a manual one with ``total=``); tqdm's keyword arguments apply."""
    return Progress(iterable, **kwargs)


def quiet_library_bars() -> None:
    """Off-terminal, switch off the libraries' own bars (read by huggingface_hub and transformers at import)."""
    if not interactive():
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
