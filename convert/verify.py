"""The calibration-drift report (`--verify`): how far quantization moves the refusal-token probabilities.

Every probe is tokenized once (by the first GGUF, with its chat template) and the same token ids are scored by each
model, so the report measures numerical drift alone. The reference is the source checkpoint run with
transformers/torch (the ``torch`` extra, imported only here) or, for `refusal-edge quantize`, the input GGUF.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from refusal_edge.decision import FirstTokenScores, decide, probabilities
from refusal_edge.extras import install_hint
from refusal_edge.policy import Policy

from .errors import ConversionError
from .probes import builtin_probes

N_CTX = 2048


def require_torch() -> None:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        raise ConversionError(
            f"--verify compares against the source checkpoint with transformers and torch: {install_hint('torch')}"
        ) from None


class TorchReference:
    """The source checkpoint in float32 through transformers: last-position logits for given token ids."""

    def __init__(self, root: Path):
        require_torch()
        import torch
        import transformers
        from transformers import AutoModelForCausalLM

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        major = int(transformers.__version__.split(".")[0])
        kwargs = {"dtype": torch.float32} if major >= 5 else {"torch_dtype": torch.float32}
        self.torch = torch
        self.model = AutoModelForCausalLM.from_pretrained(str(root), **kwargs).eval()

    def position_logits(self, tokens: Sequence[int]) -> np.ndarray:
        """Logits at every position of ``tokens`` (rows)."""
        with self.torch.no_grad():
            out = self.model(self.torch.tensor([list(tokens)], dtype=self.torch.long))
        return out.logits[0].float().numpy()

    def logits(self, tokens: Sequence[int]) -> np.ndarray:
        return self.position_logits(tokens)[-1]

    def scores(self, tokens: Sequence[int], spec, policy: Policy) -> FirstTokenScores:
        return FirstTokenScores.from_logits(self.logits(tokens), spec, policy.temperature)

    def close(self) -> None:
        self.model = None


class GGUFScorer:
    def __init__(self, path: Path, threads: int | None = None):
        from refusal_edge.model import RefusalModel

        self.model = RefusalModel.load(path, n_ctx=N_CTX, n_threads=threads)

    def scores(self, tokens: Sequence[int], spec, policy: Policy) -> FirstTokenScores:
        return self.model.engine.score(tokens, spec, policy.temperature)[0]

    def close(self) -> None:
        self.model.close()


def drift_report(
    output: Path,
    candidates: Mapping[str, Path],
    probes: Sequence | None = None,
    *,
    reference_hf: Path | None = None,
    reference_gguf: Path | None = None,
    threads: int | None = None,
    log=print,
) -> dict:
    """Score the probes with the reference and each candidate GGUF; print a table; save JSON beside ``output``."""
    probes = list(probes) if probes is not None else builtin_probes()
    labels = list(candidates)
    first = GGUFScorer(candidates[labels[0]], threads)
    try:
        spec = first.model.spec
        policy = first.model.default_policy
        token_lists = [first.model.prompt_tokens(p) for p in probes]
        scores: dict[str, list[FirstTokenScores]] = {labels[0]: [first.scores(t, spec, policy)
                                                                 for t in token_lists]}
    finally:
        first.close()
    for label in labels[1:]:
        scorer = GGUFScorer(candidates[label], threads)
        try:
            _same_spec(spec, scorer.model.spec, label)
            scores[label] = [scorer.scores(t, spec, policy) for t in token_lists]
        finally:
            scorer.close()
    if reference_hf is not None:
        ref_label, ref = "source", TorchReference(reference_hf)
    elif reference_gguf is not None:
        ref_label, ref = "input", GGUFScorer(reference_gguf, threads)
        _same_spec(spec, ref.model.spec, "input")
    else:
        raise ValueError("drift_report needs a reference")
    try:
        reference = [ref.scores(t, spec, policy) for t in token_lists]
    finally:
        ref.close()

    report = {
        "reference": ref_label,
        "probes": len(probes),
        "policy": policy.to_dict(),
        "categories": ["respond", *spec.category_names],
        "candidates": {label: _compare(reference, scores[label], spec, policy) for label in labels},
    }
    path = report_path(output)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    report["path"] = str(path)
    log(format_report(report))
    return report


def report_path(output: Path) -> Path:
    return Path(output).with_name(Path(output).stem + ".verify.json")


def _same_spec(a, b, label: str) -> None:
    if a.token_ids != b.token_ids:
        raise ConversionError(f"the {label} model's refusal tokens {b.token_ids} differ from {a.token_ids}")


def _compare(reference, candidate, spec, policy: Policy) -> dict:
    def probs(s):
        p_respond, p_cat = probabilities(s, spec, policy)
        return np.concatenate([[p_respond], p_cat])

    ref = np.array([probs(s) for s in reference])
    cand = np.array([probs(s) for s in candidate])
    delta = np.abs(cand - ref)
    agree = [decide(a, spec, policy).token_id == decide(b, spec, policy).token_id
             for a, b in zip(reference, candidate)]
    names = ["respond", *spec.category_names]
    return {
        "mean_abs_delta_p": {n: float(delta[:, i].mean()) for i, n in enumerate(names)},
        "max_abs_delta_p": {n: float(delta[:, i].max()) for i, n in enumerate(names)},
        "decision_agreement": float(np.mean(agree)),
    }


def format_report(report: dict) -> str:
    names = report["categories"]
    width = max(len(n) for n in names) + 2
    lines = [f"calibration drift vs the {report['reference']} over {report['probes']} probes "
             f"(policy rule {report['policy']['rule']}):"]
    for label, c in report["candidates"].items():
        lines.append(f"  {label}: decisions agree on {c['decision_agreement']:.1%} of probes")
        lines.append(f"    {'token':<{width}}{'mean |dp|':>12}{'max |dp|':>12}")
        for n in names:
            lines.append(f"    {n:<{width}}{c['mean_abs_delta_p'][n]:>12.5f}{c['max_abs_delta_p'][n]:>12.5f}")
    lines.append(f"  saved {report.get('path', '')}")
    return "\n".join(lines)
