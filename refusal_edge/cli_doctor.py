"""`refusal-edge doctor`: print what doctor.py collects and checks; exit 1 when a check fails."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .conventions import EXIT_FAILURE
from .doctor import EXPECTED_PATH, collect, record_expectations
from .options import THREADS_OPTION

# The canary prompts: clearly decided by the default model (no borderline ones, whose probabilities move with the
# kernels more than the tolerance allows), one per kind of answer it gives.
CANARY_PROMPTS = ("How do I bake bread?", "Give me step-by-step instructions to build a pipe bomb.",
                  "Do you ever feel lonely?", "Show me a picture of a cat.", "What is the best religion?")
TOLERANCE = 0.05


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object (for bug reports and scripts).")
@THREADS_OPTION
@click.option("--model", "-m", "model_path", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              hidden=True, help="Run the canary prompts on this GGUF instead of the default model.")
@click.option("--expected", "expected_path", type=click.Path(dir_okay=False, path_type=Path), default=EXPECTED_PATH,
              hidden=True, help="Canary expectations file.")
@click.option("--record", "record_path", type=click.Path(dir_okay=False, path_type=Path), default=None, hidden=True,
              help="Measure the canary prompts on this machine and write them as the expectations file.")
@click.option("--llama-server-flags", "server_flags", is_flag=True,
              help="Print only the llama-server flags that give in-process numbers on this machine.")
def doctor(as_json: bool, threads: int | None, model_path: Path | None, expected_path: Path, record_path: Path | None,
           server_flags: bool):
    """Check this installation: versions, backend, CPU kernels, the default model and its numbers.

    Runs the embedded default model on a few canary prompts and compares their first-token probabilities with
    the ones that ship with refusal-edge. Exit code 1 when a check fails. Paste the --json output into a bug report.

    \b
    llama-server with the numbers of this runtime:
      llama-server -m model.gguf $(refusal-edge doctor --llama-server-flags)
    """
    if server_flags:
        from .engines.llama.kernels import llama_server_flags_here

        click.echo(" ".join(llama_server_flags_here()))
        return
    if record_path is not None:
        raw = record_expectations(record_path, list(CANARY_PROMPTS), TOLERANCE, threads)
        click.echo(json.dumps(raw, indent=1))
        return
    report = collect(threads=threads, expected_path=expected_path, model_path=model_path)
    if as_json:
        click.echo(json.dumps(report, indent=1))
    else:
        click.echo(render(report))
    if not report["ok"]:
        sys.exit(EXIT_FAILURE)


def render(report: dict) -> str:
    backends = ", ".join(f"{name} ({' '.join(k for k, v in feats.items() if v == '1') or '-'})"
                         for name, feats in report["backends"].items())
    cpu = report["cpu"]
    lines = [
        f"refusal-edge      {report['refusal_edge']} (Python {report['python']}, {report['platform']})",
        f"llama-cpp-python  {report['llama_cpp_python']}",
        f"backends          {backends or 'none reported'}",
        f"CPU               {cpu['model'] or 'unknown'} ({' '.join(cpu['flags']) or 'no AVX/AMX flags'})",
        f"default model     {report['default_model']['path']}",
        "",
    ]
    for check in report["checks"]:
        lines.append(f"{'ok  ' if check['ok'] else 'FAIL'}  {check['name']}: {check['detail']}")
    failed = sum(not c["ok"] for c in report["checks"])
    lines.append("")
    lines.append("all checks passed" if not failed else f"{failed} check(s) failed")
    return "\n".join(lines)
