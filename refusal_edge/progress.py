"""One progress display for every long job (the default model's first build, eval's scoring, convert's writing and
quantizing, train's steps, pull's downloads), on stderr, that tells the truth:

- it is labelled by what the job does ("scoring prompts", "quantizing model.gguf (q4_k_m)"), never by a temporary
  file's name;
- it reaches 100 % when the job ends (``finish``, or leaving its ``with`` block without an exception);
- the rate and ETA appear only after a warm-up: the first unit (model loads, kernel compilation) is left out of the
  rate, and nothing is promised before ``WARMUP_SECONDS`` of steady work;
- on a terminal it redraws one line (``\\r``); anywhere else (a pipe, a log file) it writes a plain line when it
  starts, every ``PLAIN_INTERVAL`` seconds, and when it ends, so that logs stay readable;
- ``set_quiet()`` (a verb's ``--quiet``) silences every display of the process.

Use ``with Progress("scoring prompts", total=n, unit="prompts") as bar: ... bar.update()``, ``track(items, label)``
for an iterable, or ``tqdm_class(label)`` where a library takes a tqdm class (huggingface-hub's downloads).
"""

from __future__ import annotations

import sys
import threading
import time
import weakref
from typing import Callable, Iterable, Iterator, TextIO, TypeVar

WARMUP_SECONDS = 3.0  # of work after the first unit, before a rate and an ETA are shown
PLAIN_INTERVAL = 5.0  # seconds between plain lines (not a terminal)
TTY_INTERVAL = 0.2  # seconds between redraws on a terminal

_quiet = False
T = TypeVar("T")


def set_quiet(quiet: bool = True) -> None:
    """Silence (or restore) every progress display of this process: the verbs' --quiet."""
    global _quiet
    _quiet = quiet


def is_quiet() -> bool:
    return _quiet


class Progress:
    """One job's progress: ``update(n)`` as units are done, ``finish()`` (or the end of a ``with`` block) at the end.
    ``total`` None: a count without percentage or ETA. ``unit`` names what is counted, plural ("prompts"); "B" shows
    sizes (KiB, MiB, ...). A ticker thread keeps the display alive while no unit completes (a batch of prompts, a
    large tensor): ``tick=False`` leaves the timing to ``update`` alone (tests with a fake ``clock``)."""

    def __init__(self, label: str, total: float | None = None, *, unit: str = "", enabled: bool = True,
                 stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic,
                 tty: bool | None = None, initial: float = 0, tick: bool = True) -> None:
        self.label, self.total, self.unit, self.n = label, total, unit, initial
        self.detail = ""  # the job's own figures, shown last ("loss 0.412")
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled and not _quiet
        self.tty = _isatty(self.stream) if tty is None else tty
        self._clock = clock
        self._start = clock()
        self._initial = initial  # done before this process (a resumed job): not part of the rate
        self._first: tuple[float, float] | None = None  # (time, count) when the first unit was done
        self._shown_at: float | None = None
        self._last = ""
        self._closed = False
        self._width = 0
        self._lock = threading.Lock()  # the job's thread and the ticker draw in turn
        self._stop = threading.Event()
        if self.enabled:
            self._show(self._start)
            if tick:  # the ticker holds the display weakly: one a failed job drops is not kept alive by it
                threading.Thread(target=_tick, args=(weakref.ref(self), self._stop), name="refusal-edge-progress",
                                 daemon=True).start()

    # --- the job's side --------------------------------------------------------------------------------------
    def update(self, n: float = 1) -> None:
        with self._lock:
            self.n += n
            now = self._clock()
            if self._first is None and self.n > self._initial:
                self._first = (now, self.n)
            if self.enabled and not self._closed and now - (self._shown_at or 0) >= self._interval:
                self._show(now)

    def set_total(self, total: float | None) -> None:
        self.total = total

    def finish(self) -> None:
        """The job is done: the display ends at 100 % (a total that was an estimate becomes the real count)."""
        if self.total is not None:
            self.n = self.total
        self.close()

    def close(self, stopped: bool = False) -> None:
        """End the display where the job is (``stopped``: it failed or was interrupted, and says so)."""
        self._stop.set()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self.enabled:
                self._show(self._clock(), final=True, stopped=stopped)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.finish()
        else:
            self.close(stopped=True)

    # --- the display --------------------------------------------------------------------------------------------
    @property
    def _interval(self) -> float:
        return TTY_INTERVAL if self.tty else PLAIN_INTERVAL

    def _tick_once(self, period: float) -> bool:
        """Show the line if nothing was shown for ``period``; False once the display is over."""
        with self._lock:
            now = self._clock()
            if self._closed or not self.enabled:
                return False
            if now - (self._shown_at or 0) >= period:
                self._show(now)
            return True

    def text(self, now: float) -> str:
        """The line as shown at ``now``: label, count (and share), elapsed time, then rate and ETA once warm."""
        if self.total:
            count = f"{_amount(self.n, self.unit, self.total)} ({min(max(self.n / self.total, 0.0), 1.0):.0%})"
        else:
            count = _amount(self.n, self.unit)
        parts = [f"{self.label}: {count}", _clock_text(now - self._start)]
        rate = self.rate(now)
        if rate is not None:
            parts.append(f"{_amount(rate, self.unit)}/s")
            if self.total and self.n < self.total:
                parts.append(f"ETA {_clock_text((self.total - self.n) / rate)}")
        return ", ".join(parts + ([self.detail] if self.detail else []))

    def rate(self, now: float) -> float | None:
        """Units per second since the first unit, once ``WARMUP_SECONDS`` have passed since it; else None."""
        if self._first is None:
            return None
        since, start_count = self._first
        elapsed, done = now - since, self.n - start_count
        if elapsed < WARMUP_SECONDS or done <= 0:
            return None
        return done / elapsed

    def _show(self, now: float, final: bool = False, stopped: bool = False) -> None:
        line = self.text(now) + (" (stopped)" if stopped else "")
        self._shown_at = now
        if not self.tty and line == self._last:  # a plain log says each state once
            return
        self._last = line
        try:
            if self.tty:
                pad = max(0, self._width - len(line))
                self.stream.write("\r" + line + " " * pad + ("\n" if final else ""))
                self._width = len(line)
            else:
                self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stderr must not stop the job
            self.enabled = False


def _tick(ref: "weakref.ref[Progress]", stop: threading.Event) -> None:
    """While no unit completes, a line every PLAIN_INTERVAL off a terminal (the job is alive), and on a terminal the
    elapsed time once a second; ends with the display, or when nothing refers to it any more."""
    bar = ref()
    period = (max(bar._interval, 1.0) if bar.tty else bar._interval) if bar is not None else 0
    del bar
    while not stop.wait(period):
        bar = ref()
        if bar is None or not bar._tick_once(period):
            return
        del bar


def track(items: Iterable[T], label: str, total: float | None = None, *, unit: str = "", enabled: bool = True,
          **options) -> Iterator[T]:
    """Yield ``items``, counting each one done as it is handed out; the display reaches 100 % when they run out."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    bar = Progress(label, total, unit=unit, enabled=enabled, **options)
    finished = False
    try:
        for item in items:
            bar.update()
            yield item
        finished = True
    finally:
        bar.finish() if finished else bar.close(stopped=True)


def tqdm_class(label: str, *, enabled: bool = True) -> type:
    """A class with the part of tqdm's interface that libraries call (huggingface-hub's ``tqdm_class``), drawing
    this module's display under ``label`` (the library's own description, often a file name, is not used)."""

    class _Bar(Progress):
        _tqdm_lock = None  # tqdm's class-wide lock, which thread pools share (huggingface-hub's snapshot_download)

        def __init__(self, iterable=None, *args, total=None, initial=0, disable=False, unit="B", **kwargs):
            super().__init__(label, total, unit=unit, enabled=enabled and not disable, initial=initial)
            self._iterable = iterable

        def __iter__(self):
            for item in self._iterable or ():
                self.update()
                yield item

        def refresh(self, *args, **kwargs):
            pass

        def set_description(self, *args, **kwargs):
            pass

        def set_postfix(self, *args, **kwargs):
            pass

        def reset(self, total=None):
            self.n = 0
            self.total = total

        @classmethod
        def get_lock(cls):
            if cls._tqdm_lock is None:
                cls._tqdm_lock = threading.RLock()
            return cls._tqdm_lock

        @classmethod
        def set_lock(cls, lock):
            cls._tqdm_lock = lock

    return _Bar


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _amount(value: float, unit: str, total: float | None = None) -> str:
    """``value`` (of ``total``) in ``unit``: counts as integers ("3/10 prompts"), bytes in one binary unit chosen by
    the larger number ("1.5/3.0 GiB")."""
    if unit != "B":
        number = lambda v: f"{v:.0f}" if float(v).is_integer() else f"{v:.1f}"  # noqa: E731
        name = f" {unit}" if unit else ""
        return (f"{number(value)}/{number(total)}" if total is not None else number(value)) + name
    scale, name = 1.0, "B"
    for larger in ("KiB", "MiB", "GiB", "TiB"):
        if max(abs(value), abs(total or 0)) / scale < 1024:
            break
        scale, name = scale * 1024, larger
    digits = 0 if name == "B" else 1
    shown = f"{value / scale:.{digits}f}" + (f"/{total / scale:.{digits}f}" if total is not None else "")
    return f"{shown} {name}"


def _clock_text(seconds: float) -> str:
    seconds = max(0, int(seconds + 0.5))
    minutes, s = divmod(seconds, 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}:{m:02d}:{s:02d}" if hours else f"{m}:{s:02d}"
