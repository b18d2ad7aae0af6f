"""Files the runtime writes and reads: the cache directory, checksums, and outputs that appear whole or not at all."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

CACHE_ENV = "REFUSAL_EDGE_CACHE"


def cache_dir() -> Path:
    """$REFUSAL_EDGE_CACHE, else $XDG_CACHE_HOME/refusal-edge, else ~/.cache/refusal-edge."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "refusal-edge"


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds.

    Any failure (Ctrl-C included) removes the temporary file, so a reader never sees half a file. A SIGKILL cannot
    be caught: the next write of the same output removes what the killed writer left (``temp_path_beside``). The
    result gets the mode any new file gets (0666 less the umask), not mkstemp's private 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_beside(path)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def temp_path_beside(path: Path, tag: str = "") -> Path:
    """``.NAME.PID.[TAG.]XXXX.partial`` beside ``path``: the pid tells a later run whether its writer is gone."""
    remove_stale_partials(path)
    prefix = f".{path.name}.{os.getpid()}." + (f"{tag}." if tag else "")
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=".partial", dir=path.parent if str(path.parent) else ".")
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
            with contextlib.suppress(OSError):
                (directory / name).unlink()
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


def read_text(path: str | Path, what: str, error: type[Exception]) -> str:
    """A UTF-8 text file, or ``error`` naming it ("cannot read policy file p.toml: No such file or directory")."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:  # configuration: junk is an error to report, not something to repair
        raise error(f"{what} {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def human_size(n: float) -> str:
    """A byte count for people: ``512 B``, ``5.0 MiB``."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{n:.0f} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n:.0f} B"  # pragma: no cover


def is_checkpoint_dir(path: Path) -> bool:
    """A Hugging Face checkpoint directory: what `convert` reads and vLLM serves (it holds config.json)."""
    return (path / "config.json").is_file()
