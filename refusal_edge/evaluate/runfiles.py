"""One results file per run, as lm-evaluation-harness writes them: ``results_<timestamp>.json`` in a directory,
never overwriting an earlier run, with everything needed to say how the numbers were made (version, date, command
line, the model file's absolute path and SHA-256, the policy, the data with its revisions) and, on request, the
per-prompt rows (``samples_<timestamp>.jsonl``) and the plots (``<timestamp>_*.png``).
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from ..errors import RefusalEdgeError
from ..files import temp_path_beside
from .report import json_default

RESULTS_FORMAT = 1  # bumped when a key of the results file changes meaning


def run_header(command: Sequence[str] | None) -> dict:
    from .. import __version__

    return {"refusal_edge_version": __version__, "results_format": RESULTS_FORMAT,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": list(command) if command is not None else list(sys.argv), "cwd": os.getcwd()}


def results_document(report, command: Sequence[str] | None = None) -> dict:
    """What a results file holds: the run header, then the report (model, policy, data, scoring, results...)."""
    header = report.run or run_header(command)
    return {**header, "policy": report.policy.to_dict(), **report.data,
            "n_samples": {task: block["prompts"] for task, block in report.results.items()}}


def write_run(out_dir: Path, report, command: Sequence[str] | None, log_samples: bool, plots: bool) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = results_document(report, command)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H-%M-%S.%f")
    path = _write_new(out_dir, f"results_{stamp}", ".json", json.dumps(doc, indent=2, ensure_ascii=False,
                                                                        default=json_default) + "\n")
    stamp = path.stem.removeprefix("results_")
    if log_samples:
        text = "".join(json.dumps(row, ensure_ascii=False, default=json_default) + "\n" for row in report.samples())
        _write_new(out_dir, f"samples_{stamp}", ".jsonl", text)
    if plots:
        report.plot(out_dir, prefix=f"{stamp}_")
    return path


def _write_new(out_dir: Path, stem: str, suffix: str, text: str) -> Path:
    """Write ``text`` to a file that did not exist (``stem``, else ``stem_2``, ...), whole or not at all."""
    for n in range(1, 1000):
        path = out_dir / (stem + ("" if n == 1 else f"_{n}") + suffix)
        if path.exists():
            continue
        tmp = temp_path_beside(path)
        try:
            tmp.write_text(text, encoding="utf-8")
            os.link(tmp, path)  # fails if the name was taken meanwhile: an earlier run is never replaced
            return path
        except FileExistsError:
            continue
        except OSError as exc:
            raise RefusalEdgeError(f"cannot write {path}: {exc.strerror or exc}") from None
        finally:
            tmp.unlink(missing_ok=True)
    raise RefusalEdgeError(f"cannot find a free name for {stem}{suffix} in {out_dir}")
