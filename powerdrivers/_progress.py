"""Progress for long waits, shown only on a terminal."""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import TextIO


class Progress:
    """Shows ``label`` and the elapsed seconds on one self-rewriting line.

    Nothing is written unless ``stream`` is a terminal, so piped or
    captured output stays exactly the command's result.
    """

    def __init__(self, label: str, stream: TextIO, interval_s: float = 0.2) -> None:
        self._label = label
        self._stream = stream
        self._interval_s = interval_s
        self._enabled = stream.isatty()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._began = time.monotonic()

    def __enter__(self) -> Progress:
        if self._enabled:
            self._thread = threading.Thread(target=self._run, name="powerdrivers-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()
            self._stream.write("\r\033[K")
            self._stream.flush()

    def _run(self) -> None:
        while not self._done.wait(self._interval_s):
            elapsed = time.monotonic() - self._began
            self._stream.write(f"\r\033[K{self._label}... {elapsed:.1f}s")
            self._stream.flush()
