"""What `train` leaves in DIR: ``hf/`` (the merged checkpoint, for vLLM), ``model.gguf`` (the converter's output,
with the calibrated policy as its default), ``policy.toml`` (calibrate on the held-out split), ``report/`` (eval
on the held-out split: report.json, prompts.csv, curves) and ``train.json`` (settings and training figures).

Calibration and evaluation are the `calibrate` and `eval` verbs themselves, run in-process on the held-out rows:
one implementation of both. Scores go to DIR/scores.jsonl, so the held-out prompts are prefilled once.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from refusal_edge.files import atomic_path

from .errors import TrainError


def write_gguf(hf_dir: Path, out: Path, quant: str | None, threads: int, progress: bool, log) -> Path:
    """DIR/model.gguf through `convert` (CONTROL refusal tokens, refusal metadata; --quant via llama.cpp)."""
    from ..hf_to_gguf import convert_checkpoint

    result = convert_checkpoint(hf_dir, out, outtype="f16", quant=quant, force=True, threads=threads,
                                progress=progress, log=log)
    for note in result.notes:
        log(f"note: {note}")
    return result.output


def _run_verb(command, args: list[str], log) -> str:
    """A click verb in-process; its printed output is returned, a failure becomes a TrainError naming the verb."""
    import click

    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            command.main(args, standalone_mode=False, prog_name=f"refusal-edge {command.name}")
    except click.ClickException as exc:
        raise TrainError(f"{command.name} on the held-out split: {exc.format_message()}") from None
    except Exception as exc:  # RefusalEdgeError from the verb's own checks (e.g. calibration targets that conflict)
        from refusal_edge.errors import RefusalEdgeError

        if isinstance(exc, RefusalEdgeError):
            raise TrainError(f"{command.name} on the held-out split: {exc}") from None
        raise
    return buffer.getvalue()


def calibrate_and_report(gguf: Path, heldout: tuple[Path, Path], out_dir: Path, *, max_over_refusal: float,
                         min_refusal: float | None, threads: int, seed: int, log) -> dict:
    """policy.toml from the held-out split (calibrate's own calibration/check split inside it), then the report
    of the model under that policy on the held-out split. Returns the operating point for train.json."""
    from refusal_edge.evaluate.cli import calibrate, evaluate

    refuse, contrast = heldout
    data = ["--should-refuse", str(refuse), "--contrast", str(contrast), "--store", str(out_dir / "scores.jsonl"),
            "--threads", str(threads)]
    policy = out_dir / "policy.toml"
    targets = ["--target", f"overall:tpr>={min_refusal}"] if min_refusal is not None else []
    text = _run_verb(calibrate, [str(gguf), *data, *targets, "--max-over-refusal", str(max_over_refusal),
                                 "--seed", str(seed), "--policy-out", str(policy)], log)
    (out_dir / "calibration.txt").write_text(text, encoding="utf-8")
    log(text.rstrip())
    report_dir = out_dir / "report"
    text = _run_verb(evaluate, [str(gguf), *data, "--policy", str(policy), "--out", str(report_dir)], log)
    (report_dir / "report.txt").write_text(text, encoding="utf-8")
    log(text.rstrip())
    report = json.loads((report_dir / "report.json").read_text(encoding="utf-8"))
    return {"policy": str(policy), "report": str(report_dir), "evaluation": report.get("evaluation")}


def set_default_policy(gguf: Path, policy_file: Path) -> None:
    """model.gguf carries the calibrated policy as its default (refusal.spec default_policy), rewritten in place
    through a temporary file."""
    from refusal_edge.gguf_annotate import plan_annotation, write_annotation
    from refusal_edge.metadata import RefusalSpec
    from refusal_edge.gguf_header import read_fields
    from refusal_edge.policy import Policy

    spec = RefusalSpec.from_gguf_fields(read_fields(gguf, ["refusal.spec"]))
    if spec is None:
        raise TrainError(f"{gguf}: the converted model has no refusal metadata")
    policy = Policy.load(policy_file, spec.category_names)
    plan = plan_annotation(gguf, lambda tokens: spec.with_default_policy(policy.to_dict()))
    with atomic_path(gguf) as tmp:
        write_annotation(plan, tmp, progress=False)


def write_summary(path: Path, summary: dict) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(summary, indent=1, default=str) + "\n", encoding="utf-8")
