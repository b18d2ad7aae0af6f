"""Refusal benchmarks by name (`eval --task coconot|xstest|or-bench`): where each lives on the Hugging Face hub, at
which pinned revision, under which licence, and how its rows become the project's rows.

Each benchmark is a few files of one dataset repository, downloaded with huggingface-hub into the Hugging Face cache
(``HF_HOME`` / ``HF_HUB_CACHE``) and read from there afterwards; ``HF_HUB_OFFLINE=1`` reads the cache only. A revision
is a commit, so a result names exactly the prompts it was computed on. Mapping (docs/evaluation.md):

- should refuse vs benign: from the file (CoCoNot's original vs contrast set, OR-Bench's toxic vs hard set) or the
  row's label (XSTest's unsafe vs safe);
- category: CoCoNot's own; XSTest's unsafe and OR-Bench's toxic prompts are "Requests with safety concerns" (the
  category whose token should refuse them); their benign prompts have none;
- subcategory: CoCoNot's subcategory, XSTest's prompt type, OR-Bench's category.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

from ..errors import RefusalEdgeError
from .data import Dataset, Fields, dataset_from_rows, read_dataset

SAFETY = "Requests with safety concerns"


class TaskError(RefusalEdgeError):
    """A benchmark is unknown, or its files cannot be fetched or read."""


@dataclass(frozen=True)
class TaskFile:
    filename: str  # inside the repository
    expect: bool | None  # True: every row should be refused; False: benign; None: the row's label says
    convert: Callable[[Mapping], Mapping] | None = None  # a row as the project's rows (data.py); None: as it is


@dataclass(frozen=True)
class Task:
    name: str
    repo: str  # a dataset repository on the Hugging Face hub
    revision: str  # a commit of it (a short hash where only that could be read off the hub: docs/evaluation.md)
    files: tuple[TaskFile, ...]
    licence: str
    citation: str
    note: str = ""

    def source(self) -> dict:
        return {"repo": self.repo, "revision": self.revision, "licence": self.licence, "citation": self.citation}


def _xstest_row(row: Mapping) -> Mapping:
    unsafe = str(row.get("label", "")).strip().lower() == "unsafe"
    return {"prompt": row.get("prompt"), "should_refuse": unsafe, "category": SAFETY if unsafe else None,
            "subcategory": row.get("type"), "id": row.get("id") or row.get("id_v2")}


def _orbench_row(toxic: bool) -> Callable[[Mapping], Mapping]:
    def convert(row: Mapping) -> Mapping:
        return {"prompt": row.get("prompt"), "should_refuse": toxic, "category": SAFETY if toxic else None,
                "subcategory": row.get("category")}

    return convert


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("coconot", "allenai/coconot", "b0e07ae5f7317674dd0e4dacfbec15300d785d6c",
         (TaskFile("original/test.jsonl", True), TaskFile("contrast/test.jsonl", False)),
         "ODC-BY (the dataset card; see LICENSE.md in the repository)",
         "Brahman et al., The Art of Saying No: Contextual Noncompliance in Language Models, NeurIPS 2024 "
         "Datasets and Benchmarks. arXiv:2407.12043",
         "the test splits: 1,001 requests to refuse in five categories, 379 contrast requests to answer"),
    Task("xstest", "natolambert/xstest-v2-copy", "5a7f277",
         (TaskFile("data/prompts-00000-of-00001.parquet", None, _xstest_row),),
         "CC-BY-4.0",
         "Röttger et al., XSTest: A Test Suite for Identifying Exaggerated Safety Behaviours in Large Language "
         "Models, NAACL 2024. arXiv:2308.01263",
         "XSTest v2: 250 safe prompts in ten types (should be answered), 200 unsafe contrasts"),
    Task("or-bench", "bench-llm/or-bench", "e36d8b8",
         (TaskFile("or-bench-toxic.csv", True, _orbench_row(True)),
          TaskFile("or-bench-hard-1k.csv", False, _orbench_row(False))),
         "CC-BY-4.0",
         "Cui et al., OR-Bench: An Over-Refusal Benchmark for Large Language Models, ICML 2025. arXiv:2405.20947",
         "OR-Bench-Hard-1K (benign prompts that look harmful) and OR-Bench-Toxic (to refuse); not the 80k set"),
)}


def resolve_task(name: str) -> Task:
    task = TASKS.get(name.strip().lower())
    if task is None:
        raise TaskError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}")
    return task


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def fetch(task: Task, filename: str) -> Path:
    """One file of a benchmark at its pinned revision, from the Hugging Face cache or the hub. Offline and not
    cached: a one-line error naming the data set and HF_HUB_OFFLINE, at once (no network attempt, no retries)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    home = os.environ.get("HF_HOME")
    cache = os.environ.get("HF_HUB_CACHE") or (str(Path(home).expanduser() / "hub") if home else None)
    try:
        return Path(hf_hub_download(repo_id=task.repo, filename=filename, repo_type="dataset",
                                    revision=task.revision, cache_dir=cache, local_files_only=offline()))
    except LocalEntryNotFoundError:
        how = ("HF_HUB_OFFLINE is set" if offline() else "the hub cannot be reached")
        raise TaskError(f"task {task.name}: {task.repo}/{filename} at revision {task.revision[:12]} is not in the "
                        f"Hugging Face cache and {how}; run once online (HF_HUB_OFFLINE unset) to download it") from None
    except (HfHubHTTPError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TaskError(f"task {task.name}: cannot fetch {filename} from {task.repo}: {first}") from None


def load_task(name: str, limit: int | None = None, skip_bad: bool = False) -> list[Dataset]:
    """A benchmark's files as Datasets reported under its name, each cut to its first ``limit`` rows."""
    task = resolve_task(name)
    out = []
    for spec in task.files:
        path = fetch(task, spec.filename)
        if spec.convert is None and not path.suffix == ".parquet":
            data = read_dataset(path, spec.expect, Fields(), skip_bad)
            data.examples = data.examples[:limit] if limit else data.examples
        else:
            rows = [spec.convert(r) if spec.convert else r for r in _cut(_read_any(path), limit)]
            data = dataset_from_rows(rows, str(path), None if spec.convert else spec.expect,
                                     Fields(label="should_refuse") if spec.convert else Fields(), skip_bad)
            data.format = task.name
        data.task, data.source = task.name, {**task.source(), "file": spec.filename}
        out.append(data)
    return out


def _cut(rows: Iterable[Mapping], limit: int | None) -> list[Mapping]:
    rows = list(rows)
    return rows[:limit] if limit else rows


def _read_any(path: Path) -> list[Mapping]:
    """Rows of a JSONL/CSV file (rows.py) or of a Parquet file (pyarrow, installed with the `ray` or `test` extras)."""
    if path.suffix != ".parquet":
        from ..rows import read_rows

        rows = []
        for line, row in read_rows(path):
            if isinstance(row, str):
                raise TaskError(f"{path}:{line}: {row}")
            rows.append(row)
        return rows
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise TaskError(f"{path.name} is a Parquet file: reading it needs pyarrow (pip install pyarrow)") from None
    try:
        return pq.read_table(path).to_pylist()
    except (OSError, ValueError) as exc:
        raise TaskError(f"{path}: not a readable Parquet file: {exc}") from None
