"""Writing outputs safely: no overwrite without --force, a temporary file renamed at the end, disk-space checks."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
from pathlib import Path
from typing import Iterator

from refusal_edge.files import atomic_path, human_size

from .errors import ConversionError


def check_output(path: str | os.PathLike, force: bool, inputs: tuple[Path, ...] = ()) -> Path:
    """Fail before any work when the output exists (without --force), cannot be written, or is one of the
    ``inputs`` (files, or directories whose existing files other than GGUFs it would replace): --force overwrites
    an old output, never what the command reads."""
    path = Path(path).expanduser()
    for source in inputs:
        check_not_input(path, Path(source).expanduser())
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


SPACE_MARGIN = 64 << 20  # bytes beyond an output's estimated size: its header, and room for the file system


def check_not_input(path: Path, source: Path) -> None:
    if path.exists() and source.exists() and (path.samefile(source) or (
            source.is_dir() and path.is_file() and path.suffix != ".gguf"
            and path.resolve().is_relative_to(source.resolve()))):
        what = "the input" if path.samefile(source) else f"a file of the input {source}"
        raise ConversionError(f"output {path} is {what}: refusal-edge never writes over what it reads (not even "
                              "with --force); give another output path")


def check_space(directory: Path, needed: int, what: str = "the output") -> None:
    free = shutil.disk_usage(directory).free
    if needed > free:
        raise ConversionError(
            f"not enough disk space in {directory}: {what} needs about {human_size(needed)}, "
            f"{human_size(free)} is free"
        )



@contextlib.contextmanager
def atomic_output(path: Path, force: bool = False) -> Iterator[Path]:
    """``refusal_edge.files.atomic_path`` for a conversion: also unwinds on SIGTERM, refuses to replace a file that
    appeared meanwhile (without --force), and turns a disk-full error into a clear message."""
    path = Path(path)
    try:
        with _sigterm_as_interrupt(), atomic_path(path) as tmp:
            yield tmp
            if path.exists() and not force:  # appeared while we worked
                raise ConversionError(f"output {path} already exists; pass --force to overwrite it")
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ConversionError(f"disk full while writing {path}: free some space and run again") from None
        raise


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
