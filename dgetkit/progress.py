"""Progress reporting, as a parameter.

Every function that downloads takes ``progress=``:

- ``True`` shows ``tqdm.auto`` bars: a widget in Jupyter, text in a terminal,
  and sparse updates when the output is a log file (CI);
- ``False`` or ``None`` is silent;
- any object with tqdm's ``update``/``close`` (and ``total``) gets the byte
  counts of the whole pull, and no per-layer bars.
"""

from __future__ import annotations

import sys
import threading

#: Seconds between updates when the output is not a terminal or a notebook.
LOG_INTERVAL = 30.0


class NullProgress:
    """Progress that goes nowhere."""

    total = None
    n = 0

    def update(self, n=1):
        pass

    def close(self):
        pass


class Progress:
    """An overall bar in bytes, plus one bar per layer while it downloads."""

    def __init__(self, progress, total: int | None = None, description: str = ""):
        self._lock = threading.Lock()
        self._owns = progress is True
        self._per_layer = progress is True
        if progress is True:
            self.overall = _tqdm(total, description or "pull", position=0)
        elif progress in (False, None):
            self.overall = NullProgress()
        else:
            self.overall = progress
            if total is not None and getattr(progress, "total", None) in (None, 0):
                try:
                    progress.total = total
                except AttributeError:
                    pass

    def layer(self, description: str, total: int | None):
        """A per-layer bar (a :class:`NullProgress` unless bars are ours)."""
        if not self._per_layer:
            return NullProgress()
        return _tqdm(total, description, position=None, leave=False)

    def update(self, n: int) -> None:
        with self._lock:
            self.overall.update(n)

    def close(self) -> None:
        if self._owns:
            self.overall.close()


def _tqdm(total, description, position=None, leave=True):
    from tqdm.auto import tqdm

    interactive = _interactive()
    return tqdm(
        total=total,
        desc=description,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        position=position,
        leave=leave,
        mininterval=0.1 if interactive else LOG_INTERVAL,
        maxinterval=60 if interactive else LOG_INTERVAL * 4,
        dynamic_ncols=True,
    )


def _interactive() -> bool:
    if "ipykernel" in sys.modules:
        return True
    stream = sys.stderr
    return bool(stream and hasattr(stream, "isatty") and stream.isatty())
