"""Evaluation and calibration as a Python API: what `refusal-edge eval` and `calibrate` print, as objects.

    from refusal_edge.evaluate import evaluate, calibrate
    report = evaluate("model.gguf", "original_dev.jsonl", contrast="contrast_pref.jsonl")
    print(report)                      # the tables `eval` prints
    report.to_dict()["results"]        # rates with 95 % intervals, AUROC with a bootstrap interval, per task
    report.plot("plots/")              # PNGs (matplotlib)
    report.save("runs/")               # runs/results_<timestamp>.json, never overwritten

Data are paths, lists of paths, or lists of rows (dicts shaped like a file's rows); ``task="xstest"`` adds a
benchmark by name (tasks.py). Scores are read from and added to the score store (store.py), so a second call on the
same prompts never runs the model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Mapping, Sequence, Union

import numpy as np

from ..arguments import ModelOptions, PolicyOptions
from ..errors import RefusalEdgeError
from ..policy import Policy
from . import analysis, summary
from .batch import Probabilities, choose
from .data import Dataset, Example, Fields, dataset_from_rows, read_dataset

if TYPE_CHECKING:
    from .distributed import RaySettings

Data = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]], Sequence[Mapping], None]
PolicyLike = Union[Policy, Mapping, str, os.PathLike, None]


@dataclass
class Report:
    """One evaluation: ``to_dict()`` is what the results file holds; ``str()`` the tables `eval` prints."""

    data: dict
    examples: list[Example]
    tasks: list[str]  # per example
    probs: Probabilities
    choices: np.ndarray  # per example: OWN, RESPONDED, or 1 + category index (batch.choose)
    spec: object
    policy: Policy
    matrix: object = None  # batch.ScoreMatrix of the examples: sweeps and plots recompute from it
    run: dict = field(default_factory=dict)  # version, date, command line (filled by ``save`` if empty)

    @property
    def results(self) -> dict:
        """Per task (and ``all``): refusal rate and over-refusal with 95 % intervals, AUROC, per category/type."""
        return self.data["results"]

    def to_dict(self) -> dict:
        import copy

        return copy.deepcopy(self.data)

    def __str__(self) -> str:
        from .report import render

        return render(self.data)

    def samples(self) -> list[dict]:
        """One row per prompt: where it came from, what it should get, the first token chosen, its probabilities."""
        from .report import sample_rows

        return sample_rows(self.examples, self.tasks, self.choices, self.probs, self.spec)

    def plot(self, out_dir: str | os.PathLike, prefix: str = "") -> list[Path]:
        """The PNG plots this report supports (needs matplotlib: pip install 'refusal-edge[plot]')."""
        from . import plots

        if not plots.available():
            from ..extras import missing_message

            raise RefusalEdgeError(missing_message("matplotlib", "plots"))
        return plots.write_plots(Path(out_dir), self, prefix)

    def save(self, out_dir: str | os.PathLike, log_samples: bool = False, command: Sequence[str] | None = None,
             plots: bool = False) -> Path:
        """``out_dir/results_<timestamp>.json`` (a new file each run, never an existing one overwritten); with
        ``log_samples`` also ``samples_<timestamp>.jsonl``; with ``plots`` the PNGs as ``<timestamp>_*.png``."""
        from .runfiles import write_run

        return write_run(Path(out_dir), self, command, log_samples, plots)


def evaluate(model=None, original: Data = None, contrast: Data = None, policy: PolicyLike = None, *,
             should_refuse: Data = None, task: str | Sequence[str] = (), limit: int | None = None,
             system: str | None = None, store: str | os.PathLike | None = None, fields: Fields = Fields(),
             skip_bad: bool = False, threads: int | None = None, n_ctx: int | None = None,
             sweep: str | None = None, sweep_category: str | None = None, progress: bool = False,
             policy_options: PolicyOptions = PolicyOptions(), ray: "RaySettings | None" = None, check=None,
             during: Callable | None = None) -> Report:
    """Score every prompt once (or read its stored scores) and measure the policy on them.

    ``model``: a loaded RefusalModel, a GGUF path, None (the default model), or a ModelOptions (the model and how
    to run it: GPU layers, a remote engine, ...; ``threads``/``n_ctx``, when given, replace its own).
    ``original``: prompts labelled by their rows (CoCoNot's original set: should refuse; XSTest: by label);
    ``contrast``: benign prompts; ``should_refuse``: prompts that should all be refused. ``policy``: a Policy, a policy dict or file, or None (the
    model's default); ``policy_options``: --policy/--rule/--threshold/--bias on top of it. ``ray``: score on a Ray
    cluster. ``limit``: the first N rows of each data file. ``sweep``: a threshold range START:STOP:STEP.
    ``check(spec, policy, examples)`` runs before anything is scored; ``during(session, report)`` before the model
    is released (the CLI decodes answers there).
    """
    from .sweep import parse_range, sweep as run_sweep

    datasets = gather(original, contrast, should_refuse, task, fields, skip_bad, limit)
    with _open(model, datasets, policy, store, system, skip_bad, threads, n_ctx, progress, policy_options, ray,
               check) as s:
        report = build_report(s)
        if sweep:
            category = None
            if sweep_category and sweep_category.lower() != "all":
                from ..policy import resolve_category

                category = resolve_category(sweep_category, s.spec.category_names, "--sweep-category")
            report.data["sweep"] = run_sweep(s.run.examples, s.matrix, s.spec, s.policy, parse_range(sweep), category)
        if during is not None:
            during(s, report)
    return report


def build_report(s) -> Report:
    """The report of an open session (pipeline.Session): head, the evaluation under every rule, per-task results."""
    examples = s.run.examples
    task_of = {id(e): d.task for d in s.datasets for e in d.examples}
    tasks = [task_of.get(id(e), "") for e in examples]
    probs = s.matrix.probabilities(s.spec, s.policy)
    choices = choose(probs, s.spec, s.policy)
    refused = choices > 0
    data = {
        "model": {"path": str(Path(s.model_path).resolve()), "sha256": s.model_sha256,
                  **({"engine": s.engine} if s.engine else {})},
        "data": [{**d.summary(), **({"absolute_path": str(d.path.resolve())} if d.path.is_file() else {})}
                 for d in s.datasets],
        "scoring": {"store": str(Path(s.store.path).resolve()), "from_store": s.run.from_store, "scored": s.run.scored,
                    "prefill_tokens": s.run.prefill_tokens, "reused_tokens": s.run.reused_tokens,
                    "skipped": s.run.skipped},
        "evaluation": analysis.evaluate(examples, s.matrix, s.spec, s.policy),
        "results": summary.summarize(tasks, analysis.labels(examples), refused, probs.refusal,
                                     [e.category for e in examples], [e.subcategory for e in examples],
                                     dict(zip(s.spec.category_names, probs.categories.T))),
    }
    return Report(data, examples, tasks, probs, choices, s.spec, s.policy, s.matrix)


@dataclass
class Calibrated:
    """What ``calibrate`` found: the policy to write, and the operating point on the calibration and held-out parts."""

    policy: Policy
    operating_point: object  # operating_point.OperatingPoint
    spec: object
    model_path: str = ""  # the GGUF the scores came from

    def __str__(self) -> str:
        from .report import operating_point_text

        return operating_point_text(self.operating_point, self.spec)


def calibrate(model=None, original: Data = None, contrast: Data = None, policy: PolicyLike = None, *,
              targets: Sequence[str] = (), max_over_refusal: float = 0.10, mode: str = "guaranteed",
              confidence: float = 0.9, holdout: float = 0.25, seed: int = 0, should_refuse: Data = None,
              task: str | Sequence[str] = (), limit: int | None = None, system: str | None = None,
              store: str | os.PathLike | None = None, fields: Fields = Fields(), skip_bad: bool = False,
              threads: int | None = None, n_ctx: int | None = None, progress: bool = False,
              policy_options: PolicyOptions = PolicyOptions(), ray: "RaySettings | None" = None) -> Calibrated:
    """Thresholds that meet ``targets`` (e.g. ``"safety:tpr>=0.95"``) and the over-refusal budget, from stored
    scores; ``mode="guaranteed"`` promises them on new prompts with ``confidence`` (operating_point.py). The
    model, data and policy arguments are ``evaluate``'s."""
    from .operating_point import calibrate_session, parse_targets

    datasets = gather(original, contrast, should_refuse, task, fields, skip_bad, limit)
    with _open(model, datasets, policy, store, system, skip_bad, threads, n_ctx, progress, policy_options, ray,
               lambda spec, p, examples: parse_targets(targets, spec, examples)) as s:
        found = calibrate_session(s, targets, max_over_refusal, holdout, seed, mode, confidence)
        return Calibrated(found.policy, found, s.spec, str(s.model_path))


def _open(model, datasets, policy, store, system, skip_bad, threads, n_ctx, progress, policy_options, ray, check):
    """pipeline.open_session for evaluate and calibrate: the model argument, options and policy as they take them."""
    from dataclasses import replace

    from .pipeline import open_session

    options, loaded = _model_options(model)
    if threads is not None:
        options = replace(options, threads=threads)
    if n_ctx is not None:
        options = replace(options, n_ctx=n_ctx)
    base = None
    if isinstance(policy, (str, os.PathLike)):
        policy_options = replace(policy_options, policy_file=str(policy))
    elif policy is not None:
        base = policy if isinstance(policy, Policy) else Policy.from_dict(policy)
    return open_session(options, datasets, store_path=str(store) if store else None, system=system,
                        skip_bad=skip_bad, policy_options=policy_options, ray=ray, progress=progress, check=check,
                        loaded=loaded, policy=base)


def gather(original: Data, contrast: Data, should_refuse: Data, task: str | Sequence[str], fields: Fields,
           skip_bad: bool, limit: int | None) -> list[Dataset]:
    """Every Dataset of a run: files or rows by label source, then benchmarks by name; each cut to ``limit`` rows."""
    from .tasks import load_task

    if limit is not None and limit < 1:
        raise RefusalEdgeError(f"limit must be at least 1, got {limit}")
    out = []
    for data, expect, name in ((original, None, "original"), (should_refuse, True, "should_refuse"),
                               (contrast, False, "contrast")):
        for item in _items(data, name):
            if isinstance(item, list):
                ds = dataset_from_rows(item[:limit] if limit else item, name, expect, fields, skip_bad)
            else:
                ds = read_dataset(item, expect, fields, skip_bad)
                ds.examples = ds.examples[:limit] if limit else ds.examples
            out.append(ds)
    for name in [task] if isinstance(task, str) else task:
        out += load_task(name, limit, skip_bad)
    if not out:
        raise RefusalEdgeError("no data: give data files or rows, or a task (coconot, xstest, or-bench)")
    return out


def _items(data: Data, name: str) -> Iterable:
    """Paths one by one, or all rows as one list."""
    if data is None:
        return []
    if isinstance(data, (str, os.PathLike)):
        return [data]
    data = list(data)
    if data and all(isinstance(r, Mapping) for r in data):
        return [data]
    if any(isinstance(r, Mapping) for r in data):
        raise RefusalEdgeError(f"{name}: give paths or rows (dicts), not a mix of both")
    return data


def _model_options(model) -> tuple[ModelOptions, object | None]:
    """(the options naming the GGUF to hash, the loaded model to score with or None)."""
    if isinstance(model, ModelOptions):
        return model, None
    if model is None or isinstance(model, (str, os.PathLike)):
        return ModelOptions(None if model is None else str(model)), None
    path = getattr(getattr(model, "engine", None), "path", None)
    if path is None:
        raise RefusalEdgeError("evaluate() needs the model's GGUF file to name its scores: pass the path, or a model "
                               "loaded in-process with RefusalModel.load")
    return ModelOptions(str(path)), model
