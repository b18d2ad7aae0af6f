"""What `eval` and `calibrate` share: read the data, find the model's stored scores, score what is missing.

The model file is hashed, never loaded, unless a prompt has no stored score (or answers are wanted):
a second evaluation or a calibration of already-scored data runs without llama.cpp.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..errors import ModelLoadError, RefusalEdgeError
from ..metadata import RefusalSpec
from ..arguments import ModelOptions, PolicyOptions
from ..policy import Policy
from .batch import ScoreMatrix
from .data import Dataset
from .runner import ScoringRun, score_examples, score_matrix
from .store import ScoreStore, default_store_path, file_sha256

if TYPE_CHECKING:
    from .distributed import RaySettings


class LazyModel:
    """Loads the model on first use only (llama.cpp start-up is the slowest step of a cached run).
    ``options`` name the model file itself; ``ray``: score on a Ray cluster instead. A model the caller already
    loaded (``given``) is used as it is and left open."""

    def __init__(self, options: ModelOptions, ray: "RaySettings | None" = None, given=None):
        self.options, self.ray, self.model, self.owned = options, ray, given, given is None

    def __call__(self):
        if self.model is None and self.ray is not None:
            from .distributed import RayScorer  # scoring only, on a Ray cluster

            self.model = RayScorer(self.options, self.ray)
        elif self.model is None:
            self.model = self.options.load()
        return self.model

    def close(self) -> None:
        if self.model is not None and self.owned:
            self.model.close()
            self.model = None


@dataclass
class Session:
    model_path: Path
    model_sha256: str
    store: ScoreStore
    spec: RefusalSpec
    policy: Policy
    datasets: list[Dataset]
    run: ScoringRun
    matrix: ScoreMatrix
    model: LazyModel
    engine: str | None = None  # the remote engine and served model the scores came from; None: in-process

    def close(self) -> None:
        self.model.close()
        self.store.close()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_session(model: ModelOptions, datasets: list[Dataset], *, store_path: str | None, system: str | None,
                 skip_bad: bool, policy_options: PolicyOptions = PolicyOptions(), ray: "RaySettings | None" = None,
                 progress: bool = True, check: Callable[[RefusalSpec, Policy, list], None] | None = None,
                 loaded=None, policy: Policy | None = None) -> Session:
    """Hash the model, open its score store, build the policy, and make sure every prompt has scores.

    ``check(spec, policy, examples)`` runs before anything is scored, to reject bad options before the slow part.
    ``loaded``: a RefusalModel of the file ``model`` names, already loaded by the caller (scored with, not closed).
    ``policy`` replaces the model's default policy under ``policy_options``.
    """
    path = model.path()
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    sha = file_sha256(path)
    lazy = LazyModel(model.naming(path), ray, loaded)
    # Scores from a remote engine are stored under the file AND the engine and served model, so that they never
    # mix with in-process scores or another engine's. That needs the engine's answer: connect now.
    engine = lazy().engine.identity if model.remote is not None or loaded is not None else None
    key = sha if engine is None else hashlib.sha256(f"{sha}|{engine}".encode()).hexdigest()
    try:
        store = ScoreStore(Path(store_path) if store_path else default_store_path(key), key)
    except BaseException:
        lazy.close()
        raise
    try:
        if store.spec is None:
            store.set_spec(lazy().spec)
        spec = store.spec
        base = policy.resolved(spec.category_names) if policy is not None else Policy.default_of(spec)
        policy = policy_options.build(spec.category_names, base)
        examples = [e for d in datasets for e in d.examples]
        if check is not None:
            check(spec, policy, examples)
        run = score_examples(examples, store, lazy, system=system, temperature=policy.temperature,
                             skip_bad=skip_bad, progress=progress)
        if not run.examples:
            raise RefusalEdgeError("no prompt could be scored")
        _drop_unscored(datasets, run)
        matrix = score_matrix(store, run.keys, spec)
    except BaseException:
        lazy.close()
        store.close()
        raise
    return Session(path, sha, store, spec, policy, datasets, run, matrix, lazy, engine)


def _drop_unscored(datasets: list[Dataset], run: ScoringRun) -> None:
    """A prompt skipped while scoring (too long for the context) leaves its data set's counts too: the report's
    data section must describe the prompts that were evaluated. ``run.skipped`` says why it is missing."""
    scored = {id(e) for e in run.examples}
    for d in datasets:
        d.examples = [e for e in d.examples if id(e) in scored]
