"""Writing outputs safely: no overwrite without --force, a temporary file renamed at the end, disk-space checks."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import ConversionError


def check_output(path: str | os.PathLike, force: bool, inputs: tuple[Path, ...] = ()) -> Path:
    """Fail before any work when the output exists (without --force) or cannot be written."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise ConversionError(f"output {path} is a directory; give a file name such as {path / 'model.gguf'}")
    if path.exists() and not force:
        raise ConversionError(f"output {path} already exists; pass --force to overwrite it")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ConversionError(f"output directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise ConversionError(f"output directory {parent} is not writable")
    return path


def check_space(directory: Path, needed: int, what: str = "the output") -> None:
    free = shutil.disk_usage(directory).free
    if needed > free:
        raise ConversionError(
            f"not enough disk space in {directory}: {what} needs about {human(needed)}, {human(free)} is free"
        )


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover


@contextlib.contextmanager
def atomic_output(path: Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only when the block succeeds.

    A failure (or Ctrl-C, or SIGTERM) removes the temporary file, and a disk-full error becomes a clear message.
    A SIGKILL cannot be caught: the next write of the same output removes what the killed run left. The result
    gets the mode any new file gets (0666 less the umask), not mkstemp's private 0600.
    """
    path = Path(path)
    tmp = temp_path_beside(path)
    try:
        with _sigterm_as_interrupt():
            yield tmp
        if path.exists() and not force:  # appeared while we worked
            raise ConversionError(f"output {path} already exists; pass --force to overwrite it")
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as exc:
        _unlink(tmp)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ConversionError(f"disk full while writing {path}: free some space and run again") from None
        raise
    except BaseException:
        _unlink(tmp)
        raise


def temp_path_beside(path: Path, tag: str = "") -> Path:
    """``.NAME.PID.[TAG.]XXXX.partial`` beside ``path``: the pid tells a later run whether its writer is gone."""
    remove_stale_partials(path)
    prefix = f".{path.name}.{os.getpid()}." + (f"{tag}." if tag else "")
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=".partial", dir=path.parent or ".")
    os.close(fd)
    return Path(name)


def remove_stale_partials(path: Path) -> list[Path]:
    """Delete the temporary files of ``path`` whose writing process no longer exists (killed with SIGKILL)."""
    directory = path.parent if str(path.parent) else Path(".")
    head = f".{path.name}."
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        pid = name[len(head):].split(".", 1)[0]
        if name.startswith(head) and name.endswith(".partial") and pid.isdigit() and not _alive(int(pid)):
            _unlink(directory / name)
            removed.append(directory / name)
    return removed


def _alive(pid: int) -> bool:
    if os.name != "posix":  # no harmless liveness probe (os.kill would terminate it): never delete
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, another user's
        return True
    return True


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _unlink(p: Path) -> None:
    with contextlib.suppress(OSError):
        p.unlink()


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """So that `kill` (not only Ctrl-C) unwinds through the cleanup above. Main thread only."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")
