"""Peak memory of a benchmark's process tree, sampled in a thread (shared by benchmarks/build.py and scale.py)."""

from __future__ import annotations

import threading
import time

import psutil


class PeakMemory:
    """Peak of the summed proportional set sizes (PSS) of this process and its children, sampled every ``interval``
    seconds while the ``with`` block runs: pages shared between forked workers count once, split between them."""

    def __init__(self, interval: float = 0.02):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    total += proc.memory_full_info().pss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
