"""`refusal-edge eval` and `refusal-edge calibrate`."""

from __future__ import annotations

import functools
from pathlib import Path

import click

from .. import settings
from ..errors import RefusalEdgeError
from ..extras import install_hint
from ..options import TEXT, model_options, policy_options
from ..policy import Policy, resolve_category
from .data import Fields


def data_options(func):
    """DATA files and how to read them; shared by eval and calibrate."""

    @click.argument("inputs", nargs=-1, metavar="[MODEL] DATA...")
    @click.option("--should-refuse", "refuse_files", multiple=True, type=click.Path(dir_okay=False),
                  metavar="FILE", help="A data file whose prompts should all be refused. Repeatable.")
    @click.option("--contrast", "contrast_files", multiple=True, type=click.Path(dir_okay=False), metavar="FILE",
                  help="A data file of benign prompts that should all be answered. Repeatable.")
    @click.option("--prompt-field", default=None, help="Generic format: the prompt's field/column.")
    @click.option("--label-field", default=None,
                  help="Generic format: the should-refuse field (refuse/respond, unsafe/safe, true/false, 1/0).")
    @click.option("--category-field", default=None, help="Generic format: the category field [default: category].")
    @click.option("--skip-bad-rows", is_flag=True, help="Skip malformed rows (counted) instead of stopping.")
    @click.option("--system", default=None, type=TEXT, help="System prompt before every prompt (its KV cache is reused).")
    @click.option("--concurrency", type=click.IntRange(1, 1024), default=None,
                  help="With --engine: scoring requests kept in flight [default: the engine's slots].")
    @click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
                  help="Score on a Ray cluster (Ray Data; pip install 'refusal-edge[ray]'): ADDRESS as ray.init takes "
                       "it (auto, ray://head:10001); alone, a Ray instance on this machine.")
    @click.option("--ray-workers", type=click.IntRange(1, 4096), default=None,
                  help="With --ray: model actors scoring in parallel, each with --threads threads or one engine "
                       "connection [default: 1].")
    @click.option("--store", "store_path", type=click.Path(dir_okay=False), default=None,
                  help="Score store (JSONL) [default: ~/.cache/refusal-edge/scores/<model hash>.jsonl].")
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func(*args, **kwargs)

    return wrapper


def _run_library(function, inputs, refuse_files, contrast_files, prompt_field, label_field, category_field,
                 skip_bad_rows, system, concurrency, ray_address, ray_workers, store_path, policy_options,
                 model_options, **more):
    """library.evaluate or library.calibrate (``function``) with the shared options; ``more``: the verb's own."""
    from dataclasses import replace

    from ..arguments import split_model_argument

    if concurrency is not None:
        if model_options.remote is None:
            raise click.UsageError("--concurrency needs --engine URL (in-process scoring runs one prompt at a time)")
        model_options = replace(model_options, remote=replace(model_options.remote, concurrency=concurrency))
    ray = None
    if ray_address is not None:
        from .distributed import RaySettings

        ray = RaySettings(ray_address, ray_workers or 1)
    elif ray_workers is not None:
        raise click.UsageError("--ray-workers needs --ray")
    model, data = split_model_argument(inputs, model_options.source)
    return function(model_options.naming(model), list(data), should_refuse=list(refuse_files),
                    contrast=list(contrast_files), fields=Fields(prompt_field, label_field, category_field),
                    skip_bad=skip_bad_rows, system=system, store=store_path, progress=True,
                    policy_options=policy_options, ray=ray, **more)


def run_options(func):
    """--task and --limit: benchmarks by name, and how much of each data set; shared by eval and calibrate."""

    @click.option("--task", "tasks", multiple=True, metavar="NAME",
                  help="A benchmark by name, downloaded into the Hugging Face cache at a pinned revision: "
                       "coconot, xstest or or-bench. Repeatable; combines with DATA files.")
    @click.option("--limit", type=click.IntRange(min=1), default=None, metavar="N",
                  help="Only the first N rows of each data file (a quick look, not a result to cite).")
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func(*args, **kwargs)

    return wrapper


def _print_sources(report_data: dict) -> None:
    """Licence and citation of every benchmark used (stderr, so that --json keeps stdout to itself)."""
    seen = set()
    for d in report_data["data"]:
        if d.get("repo") and d["task"] not in seen:
            seen.add(d["task"])
            click.echo(f"{d['task']}: {d['repo']} @ {d['revision']}; licence {d['licence']}; cite: {d['citation']}",
                       err=True)


@click.command("eval")
@data_options
@run_options
@click.option("--output", "-o", "output_dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Write DIR/results_<timestamp>.json (a new file every run: version, date, command line, model "
                   "path and SHA-256, policy, rates with 95 % intervals) and the plots beside it.")
@click.option("--log-samples", is_flag=True, help="With --output: also samples_<timestamp>.jsonl, one row per prompt.")
@click.option("--json", "as_json", is_flag=True, help="Print the results summary as JSON on stdout instead of tables.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Write report.json, prompts.csv and PNG plots here (replaced on every run; --output keeps runs).")
@click.option("--sweep", "sweep_range", default=None, metavar="START:STOP:STEP",
              help="Print a threshold sweep, e.g. 0:1:0.05 (computed from stored scores).")
@click.option("--sweep-category", default="all", show_default=True,
              help="Sweep one category's threshold (others as in the policy), or all of them together.")
@click.option("--subcategories", is_flag=True, help="Also print the per-subcategory table.")
@click.option("--generate", is_flag=True, help="Also decode answers and judge whether they read as refusals.")
@click.option("--max-tokens", type=click.IntRange(min=1), default=128, show_default=True,
              help="Answer length with --generate (the paper used 128).")
@click.option("--judge", default=None, metavar="MODULE:FUNCTION",
              help="With --generate: function(prompt, answer) -> bool instead of the phrase detector.")
@click.option("--no-plots", is_flag=True, help="Skip the PNG plots.")
@policy_options
@model_options
def evaluate(tasks, limit, output_dir, log_samples, as_json, out_dir, sweep_range, sweep_category, subcategories,
             generate, max_tokens, judge, no_plots, **options):
    """Refusal metrics from one prefill per prompt; every policy and sweep is computed from stored scores.

    DATA is JSONL or CSV: CoCoNot rows (category, subcategory, prompt), XSTest's CSV (prompt, type, label),
    or any file with --prompt-field/--label-field; --task names a standard benchmark instead. First-token scores
    are stored per model and prompt, so a rerun (or an interrupted run) prefills only what is missing, and a
    prompt's scores are the same whatever it is scored with (docs/evaluation.md).

    \b
    Examples:
      refusal-edge eval model.gguf original_dev.jsonl --contrast contrast_pref.jsonl -o runs/
      refusal-edge eval model.gguf --task xstest --task coconot -o runs/ --log-samples
      refusal-edge eval --task or-bench --limit 50 --json
      refusal-edge eval xstest_prompts.csv --sweep 0:1:0.05 --sweep-category safety
      refusal-edge eval model.gguf dev.jsonl --contrast c.jsonl --generate --max-tokens 64
      refusal-edge eval model.gguf dev.jsonl --engine http://127.0.0.1:8081 --concurrency 8
      refusal-edge eval model.gguf dev.jsonl --ray auto --ray-workers 8 --threads 4
    """
    import json
    import sys

    from . import library, report as rep
    from .detector import load_judge
    from .runfiles import results_document, run_header
    from .sweep import DEFAULT_RANGE, parse_range

    if judge and not generate:
        raise click.UsageError("--judge needs --generate")
    if log_samples and not output_dir:
        raise click.UsageError("--log-samples needs --output DIR")
    if generate and options["ray_address"] is not None:
        raise click.UsageError("--generate decodes on this machine: run it without --ray (the scores --ray stored "
                               "are reused)")
    parse_range(sweep_range or DEFAULT_RANGE)  # a bad range is an error before anything is scored
    judged = load_judge(judge) if generate else None
    header = run_header(sys.argv)

    def check(spec, policy, examples):  # before any prompt is scored: a typo should not cost a scoring run
        if sweep_category.lower() != "all":
            resolve_category(sweep_category, spec.category_names, "--sweep-category")

    answers = {}

    def during(s, report):
        if generate:
            from .batch import token_ids
            from .detector import judge_answers

            answers["answers"], answers["refused"], report.data["generation"] = judge_answers(
                s, s.run.examples, report.choices, token_ids(report.choices, s.matrix, s.spec),
                options["system"], max_tokens, judged)

    plotting = not no_plots and (out_dir or output_dir)
    report = _run_library(library.evaluate, **options, task=tasks, limit=limit, check=check, during=during,
                          sweep=sweep_range or (DEFAULT_RANGE if out_dir or plotting else None),
                          sweep_category=sweep_category)
    report.run = header
    _print_sources(report.data)
    if as_json:
        doc = results_document(report)
        summary = {k: doc[k] for k in (*header, "model", "policy", "data", "results", "n_samples")}
        click.echo(json.dumps(summary, indent=2, ensure_ascii=False, default=rep.json_default))
    else:
        shown = dict(report.data) if sweep_range else {k: v for k, v in report.data.items() if k != "sweep"}
        click.echo(rep.render(shown, subcategories))
    written = []
    if output_dir:
        if plotting and not _plots_available():
            plotting = False
        results = report.save(output_dir, log_samples, plots=bool(plotting))
        stamp = results.stem.removeprefix("results_")
        written += [results, *sorted(p for p in results.parent.glob(f"*{stamp}*") if p != results)]
    if out_dir:
        out = Path(out_dir)
        rep.write_json(out / "report.json", results_document(report))
        rep.write_rows_csv(out / "prompts.csv", report.examples, report.choices, report.probs, report.spec,
                           answers.get("answers"), answers.get("refused"))
        written += [out / "report.json", out / "prompts.csv"]
        if not no_plots and _plots_available():
            written += report.plot(out)
    if written:
        click.echo("\nwrote " + ", ".join(str(p) for p in written), err=as_json)


def _plots_available() -> bool:
    from . import plots

    if not plots.available():
        click.echo(f"plots skipped: matplotlib is not installed ({install_hint('plot')})", err=True)
        return False
    return True


@click.command("calibrate")
@data_options
@run_options
@click.option("--target", "targets", multiple=True, metavar="CATEGORY:METRIC>=VALUE",
              help="A target such as safety:tpr>=0.95 or overall:over-refusal<=0.05 (metrics: tpr, "
                   "over-refusal). Repeatable.")
@click.option("--max-over-refusal", type=click.FloatRange(0, 1), default=0.10, show_default=True,
              help="Share of benign prompts that may be refused (guaranteed mode: on new prompts, with "
                   "--confidence); spare budget buys refusals elsewhere.")
@click.option("--mode", type=click.Choice(["guaranteed", "empirical"]), default="guaranteed", show_default=True,
              help="guaranteed: one shared threshold whose exact binomial bounds promise the targets on new prompts "
                   "of the same distribution with --confidence; empirical: per-category thresholds that meet them "
                   "on the calibration sample only. The report shows both.")
@click.option("--confidence", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.9,
              show_default=True, help="Guaranteed mode: probability that every promised target holds.")
@click.option("--holdout", type=click.FloatRange(0, 0.9), default=settings.CALIBRATION_HOLDOUT, show_default=True,
              help="Share of the data held out to show how the thresholds generalise (stratified).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the held-out split.")
@click.option("--output", "-o", "policy_out", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Where to write the calibrated policy (.toml or .json) [default: policy.toml].")
@click.option("--policy-out", "policy_out_alias", type=click.Path(dir_okay=False), default=None, hidden=True,
              help="The former name of --output.")
@click.option("--write-default", type=click.Path(dir_okay=False), default=None, metavar="OUT.gguf",
              help="Also write a copy of the model with this policy as its default.")
@click.option("--force", "-f", is_flag=True, help="Overwrite OUT.gguf if it exists.")
@policy_options
@model_options
def calibrate(tasks, limit, targets, max_over_refusal, mode, confidence, holdout, seed, policy_out, policy_out_alias,
              write_default, force, **options):
    """Choose thresholds from stored scores to meet refusal targets, and write a policy.

    By default (--mode guaranteed) the targets are promised on new prompts from the same distribution with
    --confidence (Clopper-Pearson bounds, fixed-sequence testing along one shared threshold); too little data
    for that promise is an error that says how much is needed. The data is split into a calibration part and a
    held-out part; both modes' operating points are printed on both parts, so over-fitting shows.

    \b
    Examples:
      refusal-edge calibrate model.gguf dev.jsonl --contrast contrast.jsonl --target "safety:tpr>=0.95"
      refusal-edge calibrate dev.jsonl --contrast c.jsonl --max-over-refusal 0.15 --confidence 0.9
      refusal-edge calibrate dev.jsonl --contrast c.jsonl --max-over-refusal 0.05 --write-default tuned.gguf
    """
    from . import library

    if policy_out and policy_out_alias and policy_out != policy_out_alias:
        raise click.UsageError(f"two policy files given: --output {policy_out} and --policy-out {policy_out_alias}; "
                               "give one")
    policy_out = policy_out or policy_out_alias or "policy.toml"
    found = _run_library(library.calibrate, **options, task=tasks, limit=limit, targets=targets,
                         max_over_refusal=max_over_refusal, mode=mode, confidence=confidence, holdout=holdout,
                         seed=seed)
    click.echo(str(found))
    policy = found.policy
    policy.save(policy_out)
    click.echo(f"\nwrote {policy_out}  (use it with --policy {policy_out})")
    if write_default:
        _write_default(found, policy, Path(write_default), force)


def _write_default(found, policy: Policy, out: Path, force: bool) -> None:
    model_path = Path(found.model_path)
    if out.resolve() == model_path.resolve():
        raise RefusalEdgeError(f"--write-default {out} is the model itself; write a copy under another name")
    if out.exists() and not force:
        raise RefusalEdgeError(f"output {out} already exists; pass --force to overwrite it")
    from ..files import atomic_path
    from ..gguf_annotate import plan_annotation, write_annotation

    plan = plan_annotation(model_path, lambda tokens: found.spec.with_default_policy(policy.to_dict()))
    with atomic_path(out) as tmp:
        write_annotation(plan, tmp, progress=True, desc=f"writing {out.name}")
    click.echo(f"wrote {out}: {model_path.name} with this policy as its default (refusal.spec default_policy)")
