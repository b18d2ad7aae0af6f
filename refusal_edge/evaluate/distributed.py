"""Scoring across machines: the prompts a store lacks as a Ray Data job (``eval --ray``).

Ray Data does the scheduling: the prompts are a dataset, ``map_batches`` hands batches to a pool of actors, each
actor one ``RefusalModel`` (in-process llama.cpp with its own threads, or a connection to a remote engine) that
scores its batch with ``score_many``. Results come back in prompt order and are stored one by one as they arrive,
as in-process scoring does, so resume is intact: a rerun sends only unscored prompts to Ray.

Every Ray node must see the model file (and, with --engine, the engine URL) at the same path, and have
refusal-edge installed. The runtime imports Ray only here, only when asked (``pip install 'refusal-edge[ray]'``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Iterable, Iterator

from ..arguments import ModelOptions
from ..decision import FirstTokenScores
from ..engine import PrefillStats
from ..errors import RefusalEdgeError
from ..extras import missing_message
from ..engines.remote.errors import EngineError

LOCAL = "local"  # --ray without an address: a Ray instance on this machine


@dataclass(frozen=True)
class RaySettings:
    """--ray [ADDRESS] and --ray-workers: where the cluster is and how many model actors score."""

    address: str = LOCAL
    workers: int = 1
    batch_size: int = 8  # prompts per actor call: small enough to spread a short run over every actor


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise RefusalEdgeError(missing_message("ray", "--ray (Ray Data)")) from None
    return ray


class Scorer:
    """A Ray Data actor: one model per actor, loaded once; scores a batch of rendered conversations."""

    def __init__(self, options: ModelOptions, temperature: float):
        self.model = options.load()
        self.temperature = temperature

    def __call__(self, batch: dict) -> dict:
        out = {"scores": [], "prompt_tokens": [], "reused_tokens": [], "error": [], "fatal": []}
        conversations = [json.loads(m) for m in batch["messages"]]
        try:
            results = list(self.model.score_many(conversations, self.temperature))
        except EngineError as exc:  # the engine failed: the run stops, with the engine's message
            results = [exc] * len(conversations)
            out["fatal"] = [str(exc)] * len(conversations)
        for result in results:
            if isinstance(result, RefusalEdgeError):
                out["scores"].append("")
                out["prompt_tokens"].append(0)
                out["reused_tokens"].append(0)
                out["error"].append(str(result))
            else:
                scores, stats = result
                out["scores"].append(json.dumps(scores.to_dict()))
                out["prompt_tokens"].append(stats.prompt_tokens)
                out["reused_tokens"].append(stats.reused_tokens)
                out["error"].append("")
        if not out["fatal"]:
            out["fatal"] = [""] * len(conversations)
        return out


class RayScorer:
    """What ``evaluate.runner.score_examples`` needs of a model (``spec``, ``score_many``), scored on Ray.

    The driver reads the spec (vocabulary-only in-process; with --engine it connects, as the store key needs the
    engine's identity) and never loads the weights itself.
    """

    def __init__(self, options: ModelOptions, settings: RaySettings):
        import_ray()  # a missing Ray is the one error line, before the scoring display starts
        self.path, self.settings = options.path(), settings
        # The workers' copy: the file resolved here, llama.cpp's log silent (it would interleave across actors).
        self.options = replace(options, source=str(self.path), verbose=False)
        self._started = False
        if options.remote is not None:
            self._probe = options.load()
            self.engine, self.spec = self._probe.engine, self._probe.spec
        else:
            from ..model import RefusalModel

            self._probe, self.engine = None, None
            self.spec = RefusalModel.read_file_spec(self.path)

    def score_many(self, conversations: Iterable, temperature: float = 1.0
                   ) -> Iterator[tuple[FirstTokenScores, PrefillStats] | RefusalEdgeError]:
        ray = import_ray()
        self._init(ray)
        rows = [{"messages": json.dumps(c if not isinstance(c, str) else [{"role": "user", "content": c}],
                                        ensure_ascii=False)} for c in conversations]
        if not rows:
            return
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # results zip with the prompts, stored as they arrive
        context.enable_progress_bars = False
        threads = self.options.threads or 1
        # at least one batch per actor, so that a short run still spreads over every actor
        workers = self.settings.workers
        batch = max(1, min(self.settings.batch_size, -(-len(rows) // workers)))
        dataset = ray.data.from_items(rows, override_num_blocks=-(-len(rows) // batch))
        scored = dataset.map_batches(
            Scorer, fn_constructor_kwargs={"options": self.options, "temperature": temperature},
            compute=ray.data.ActorPoolStrategy(size=workers), batch_size=batch, batch_format="numpy",
            num_cpus=1 if self.options.remote else threads)
        try:
            for row in scored.iter_rows():
                if row["fatal"]:
                    raise EngineError(str(row["fatal"]))
                if row["error"]:
                    yield RefusalEdgeError(str(row["error"]))
                    continue
                stats = PrefillStats(int(row["prompt_tokens"]), int(row["reused_tokens"]), 0.0)
                yield FirstTokenScores.from_dict(json.loads(row["scores"])), stats
        except RefusalEdgeError:
            raise
        except Exception as exc:  # Ray wraps a failed actor (model load, worker crash) in its own errors
            cause = getattr(exc, "cause", None) or exc
            message = str(cause).strip().splitlines()
            raise RefusalEdgeError(f"Ray scoring failed: {type(cause).__name__}: "
                                   f"{message[-1] if message else cause}") from None

    def _init(self, ray) -> None:
        if ray.is_initialized():
            return
        address = None if self.settings.address == LOCAL else self.settings.address
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise RefusalEdgeError(f"cannot reach the Ray cluster at {self.settings.address}: {exc}") from None
        self._started = True

    def close(self) -> None:
        if self._probe is not None:
            self._probe.close()
            self._probe = None
        if self._started:
            import ray

            ray.shutdown()
            self._started = False
