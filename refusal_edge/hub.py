"""GGUF files from the Hugging Face hub, through huggingface-hub's own cache (``$HF_HUB_CACHE``): what a model argument
``owner/repo/file.gguf`` and `refusal-edge pull` fetch.

huggingface-hub retries a failed request five times with back-off (24 s when nothing answers, on every call); here
the hub is asked once, without retries, before any download, so offline use fails in a fraction of a second with one
line naming the problem. ``HF_HUB_OFFLINE`` means no network at all: only the cache.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelLoadError

PROBE_SECONDS = 3.0  # how long the hub may take to answer the first request before it counts as unreachable
DEFAULT_ENDPOINT = "https://huggingface.co"


@dataclass(frozen=True)
class HubFile:
    repo: str  # owner/name
    filename: str  # path inside the repository

    def __str__(self) -> str:
        return f"{self.repo}/{self.filename}"


# huggingface-hub reads these variables once, when it is first imported; they are read again here so that a process
# that imported the hub earlier (transformers does) still honours them as they are now.
def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hf_cache_dir() -> Path:
    """huggingface-hub's cache: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME")
    return (Path(home).expanduser() if home else Path.home() / ".cache" / "huggingface") / "hub"


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")


def cached(file: HubFile) -> Path | None:
    """The file in the cache (the revision ``main`` points to), or None; never touches the network."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(file.repo, file.filename, cache_dir=hf_cache_dir())
    return Path(found) if isinstance(found, str) else None


def fetch(file: HubFile, *, refresh: bool = False) -> tuple[Path, bool]:
    """(the file's path, whether it was downloaded now). A cached file is used as it is unless ``refresh`` (`pull`):
    then the hub is asked for a newer revision, where it can be. The download shows refusal-edge's progress display
    (progress.py: plain lines on a pipe, silent with --quiet) where huggingface-hub takes a tqdm class."""
    import inspect

    from huggingface_hub import hf_hub_download

    from .progress import tqdm_class

    bar = {}
    if "tqdm_class" in inspect.signature(hf_hub_download).parameters:  # huggingface-hub releases since 2025
        bar["tqdm_class"] = tqdm_class(f"downloading {file}")

    before = cached(file)
    if before is not None and (not refresh or offline()):
        return before, False
    require_network(str(file))
    try:
        path = Path(hf_hub_download(file.repo, file.filename, cache_dir=hf_cache_dir(), endpoint=endpoint(), **bar))
    except Exception as exc:
        error = hub_error(exc, file.repo, f"fetch {file}")
        if error is None:
            raise
        raise error from None
    return path, before is None or path.resolve() != before.resolve()


def repo_ggufs(repo: str) -> list[str]:
    """The GGUF files of a repository: from the hub, or from the cache when offline."""
    if offline():
        return sorted(f.filename for f in cached_files() if f.repo == repo)
    require_network(repo)
    from huggingface_hub import HfApi

    try:
        files = HfApi(endpoint=endpoint()).list_repo_files(repo)
    except Exception as exc:
        error = hub_error(exc, repo, f"list {repo}")
        if error is None:
            raise
        raise error from None
    return sorted(f for f in files if f.lower().endswith(".gguf"))


def cached_files() -> dict[HubFile, Path]:
    """Every GGUF in the cache and where it is: in the revision ``main`` points to, else the newest snapshot holding
    it."""
    found: dict[HubFile, tuple[tuple[bool, float], Path]] = {}
    root = hf_cache_dir()
    for repo_dir in sorted(root.glob("models--*--*")) if root.is_dir() else ():
        repo = "/".join(repo_dir.name.split("--")[1:3])
        main = _read_ref(repo_dir / "refs" / "main")
        for snapshot in (repo_dir / "snapshots").glob("*"):
            for path in snapshot.rglob("*.gguf"):
                if not path.exists():  # a dangling link: the blob was removed
                    continue
                file = HubFile(repo, path.relative_to(snapshot).as_posix())
                rank = (snapshot.name == main, path.stat().st_mtime)
                if file not in found or rank > found[file][0]:
                    found[file] = (rank, path)
    return {file: found[file][1] for file in sorted(found, key=str)}


def remove_cached(path: Path) -> None:
    """Delete one file from the cache: its snapshot entry and, when no other snapshot links to it, its blob."""
    blob = path.resolve() if path.is_symlink() else None
    path.unlink()
    if blob is None:
        return
    snapshots = blob.parent.parent / "snapshots"
    if not any(p.is_symlink() and p.resolve() == blob for p in snapshots.rglob("*")):
        blob.unlink(missing_ok=True)


def require_network(what: str) -> None:
    """Fail at once when the hub cannot be asked: HF_HUB_OFFLINE is set, or its first request gets no answer
    (huggingface-hub itself would retry for 24 s)."""
    if offline():
        raise ModelLoadError(f"{what} is not in the Hugging Face cache ({hf_cache_dir()}) and HF_HUB_OFFLINE is "
                             "set")
    from huggingface_hub import get_session

    try:
        get_session().head(endpoint(), timeout=PROBE_SECONDS)
    except Exception as exc:  # httpx's transport errors; any answer at all (even a 404) means the hub is there
        raise ModelLoadError(f"cannot reach {endpoint()} for {what} ({_first_line(exc) or type(exc).__name__}); "
                             "with HF_HUB_OFFLINE=1 only the Hugging Face cache is used") from None


def hub_error(exc: Exception, repo: str, doing: str) -> ModelLoadError | None:
    """huggingface-hub's failure as one line; None for what is not the hub's (a bug: it keeps its traceback)."""
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError)

    if isinstance(exc, GatedRepoError):
        return ModelLoadError(f"{repo} is gated: accept its licence on the hub and set HF_TOKEN")
    if isinstance(exc, RepositoryNotFoundError):
        return ModelLoadError(f"no repository {repo} on {endpoint()} (or it is private: set HF_TOKEN)")
    if isinstance(exc, LocalEntryNotFoundError):  # a subclass of the next: not in the cache, and the hub went quiet
        return ModelLoadError(f"cannot {doing}: {endpoint()} stopped answering")
    if isinstance(exc, EntryNotFoundError):
        return ModelLoadError(f"cannot {doing}: {repo} has no such file")
    if isinstance(exc, (HfHubHTTPError, OSError, ValueError)):
        return ModelLoadError(f"cannot {doing}: {_first_line(exc)}")
    return None


def _read_ref(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else ""

