"""Progress reporting of long runs (`cvflow video`, `cvflow eval`) on stderr."""
from __future__ import annotations

import sys
import time

__all__ = ["Progress", "plural"]


def plural(n: int, word: str) -> str:
    """'1 pair', '2 pairs'."""
    return f"{n} {word}{'' if n == 1 else 's'}"


class Progress:
    """A progress display of pairs and pairs/s on stderr: tqdm when installed, else a plain counter."""

    def __init__(self, total=None, desc="flow", enabled=True, stream=None):
        self.n = 0
        self._stream = stream if stream is not None else sys.stderr
        self._start = time.perf_counter()
        self._bar = None
        self._enabled = enabled
        self._total = total
        self._desc = desc
        if enabled:
            try:
                from tqdm import tqdm  # optional dependency (extra `progress`)
            except ImportError:
                tqdm = None
            if tqdm is not None:
                # the rate as "pairs/s" even when slower than 1/s (tqdm would switch to "s/pair")
                self._bar = tqdm(total=total, desc=desc, unit="pair", file=self._stream, dynamic_ncols=True,
                                 bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]")

    def update(self, n=1):
        self.n += n
        if self._bar is not None:
            self._bar.set_postfix_str(f"{self.rate():.2f} pairs/s", refresh=False)
            self._bar.update(n)
        elif self._enabled:
            total = f"/{self._total}" if self._total else ""
            self._stream.write(f"\r{self._desc}: {self.n}{total} pairs, {self.rate():.2f} pairs/s")
            self._stream.flush()

    def rate(self):
        elapsed = time.perf_counter() - self._start
        return self.n / elapsed if elapsed > 0 else 0.0

    def close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._enabled and self.n:
            self._stream.write("\n")
            self._stream.flush()
        self._enabled = False
