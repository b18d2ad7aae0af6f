"""`refusal-edge eval` and `refusal-edge calibrate`."""

from __future__ import annotations

import functools
from pathlib import Path

import click
import numpy as np

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


def _session(inputs, refuse_files, contrast_files, prompt_field, label_field, category_field, skip_bad_rows,
             system, concurrency, ray_address, ray_workers, store_path, policy_options, model_options, check=None):
    from dataclasses import replace

    from ..arguments import split_model_argument
    from .pipeline import open_session, read_all

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
    datasets = read_all(data, refuse_files, contrast_files, Fields(prompt_field, label_field, category_field),
                        skip_bad_rows)
    return open_session(model_options.naming(model), datasets, store_path=store_path, system=system,
                        skip_bad=skip_bad_rows, policy_options=policy_options, ray=ray, check=check)


def _report_head(s) -> dict:
    from .pipeline import display_path

    run = s.run
    return {
        "model": {"path": display_path(s.model_path), "sha256": s.model_sha256,
                  **({"engine": s.engine} if s.engine else {})},
        "data": [d.summary() for d in s.datasets],
        "scoring": {"store": display_path(s.store.path), "from_store": run.from_store, "scored": run.scored,
                    "prefill_tokens": run.prefill_tokens, "reused_tokens": run.reused_tokens,
                    "skipped": run.skipped},
    }


@click.command("eval")
@data_options
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Write report.json, prompts.csv and PNG plots here.")
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
def evaluate(out_dir, sweep_range, sweep_category, subcategories, generate, max_tokens, judge, no_plots, **options):
    """Refusal metrics from one prefill per prompt; every policy and sweep is computed from stored scores.

    DATA is JSONL or CSV: CoCoNot rows (category, subcategory, prompt), XSTest's CSV (prompt, type, label),
    or any file with --prompt-field/--label-field. First-token scores are stored per model and prompt, so a
    rerun (or an interrupted run) prefills only what is missing.

    \b
    Examples:
      refusal-edge eval model.gguf original_dev.jsonl --contrast contrast_pref.jsonl --out eval/
      refusal-edge eval xstest_prompts.csv --sweep 0:1:0.05 --sweep-category safety
      refusal-edge eval model.gguf dev.jsonl --contrast c.jsonl --generate --max-tokens 64
      refusal-edge eval model.gguf dev.jsonl --engine http://127.0.0.1:8081 --concurrency 8
      refusal-edge eval model.gguf dev.jsonl --ray auto --ray-workers 8 --threads 4
    """
    from . import analysis, report as rep
    from .batch import choose, token_ids
    from .detector import load_judge
    from .sweep import DEFAULT_RANGE, parse_range, sweep

    if judge and not generate:
        raise click.UsageError("--judge needs --generate")
    if generate and options["ray_address"] is not None:
        raise click.UsageError("--generate decodes on this machine: run it without --ray (the scores --ray stored "
                               "are reused)")
    grid = parse_range(sweep_range or DEFAULT_RANGE)
    judged = load_judge(judge) if generate else None
    swept = {"category": None}

    def check(spec, policy, examples):  # before any prompt is scored: a typo should not cost a scoring run
        if sweep_category.lower() != "all":
            swept["category"] = resolve_category(sweep_category, spec.category_names, "--sweep-category")

    with _session(**options, check=check) as s:
        examples = s.run.examples
        result = _report_head(s)
        result["evaluation"] = analysis.evaluate(examples, s.matrix, s.spec, s.policy)
        if sweep_range or out_dir:
            result["sweep"] = sweep(examples, s.matrix, s.spec, s.policy, grid, swept["category"])
        probs = s.matrix.probabilities(s.spec, s.policy)
        choices = choose(probs, s.spec, s.policy)
        answers = answer_refused = None
        if generate:
            answers, answer_refused, result["generation"] = _generate(
                s, examples, choices, token_ids(choices, s.matrix, s.spec), options["system"], max_tokens, judged)
        shown = dict(result) if sweep_range else {k: v for k, v in result.items() if k != "sweep"}
        click.echo(rep.render(shown, subcategories))
        if out_dir:
            out = Path(out_dir)
            rep.write_json(out / "report.json", result)
            rep.write_rows_csv(out / "prompts.csv", examples, choices, probs, s.spec, answers, answer_refused)
            written = [out / "report.json", out / "prompts.csv"]
            if not no_plots:
                written += _plots(out, result.get("sweep"), analysis.roc_points(examples, probs, s.spec))
            click.echo("\nwrote " + ", ".join(str(p) for p in written))


def _generate(s, examples, choices, ids, system, max_tokens, judged):
    from .analysis import gold_label
    from .detector import agreement
    from .runner import generate_answers

    judge, judge_name = judged
    answers = generate_answers(examples, s.run.keys, ids, s.store, s.model, s.policy, system=system,
                               max_tokens=max_tokens)
    verdicts = np.array([bool(judge(e.prompt, a)) for e, a in zip(examples, answers)])
    token_refused = choices > 0
    gold = np.array([gold_label(e) for e in examples], dtype=object)
    groups = {}
    for name in dict.fromkeys(gold):  # what the prompt should get: its category, or "respond"
        rows = gold == name
        a = agreement(token_refused[rows], verdicts[rows])
        groups[name] = {"prompts": int(rows.sum()), "token_refusal_rate": float(token_refused[rows].mean()),
                        "answer_refusal_rate": a["answer_refusal_rate"], "agreement": a["agreement"]}
    summary = {"prompts": len(answers), "max_tokens": max_tokens, "judge": judge_name,
               "agreement": agreement(token_refused, verdicts), "by_category": groups}
    return answers, verdicts, summary


def _plots(out: Path, sweep_result, roc) -> list[Path]:
    from . import plots

    if not plots.available():
        click.echo(f"plots skipped: matplotlib is not installed ({install_hint('plot')})", err=True)
        return []
    return plots.write_plots(out, sweep_result, roc)


@click.command("calibrate")
@data_options
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
@click.option("--holdout", type=click.FloatRange(0, 0.9), default=0.25, show_default=True,
              help="Share of the data held out to show how the thresholds generalise (stratified).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the held-out split.")
@click.option("--policy-out", "-o", type=click.Path(dir_okay=False), default="policy.toml", show_default=True,
              help="Where to write the calibrated policy (.toml or .json).")
@click.option("--write-default", type=click.Path(dir_okay=False), default=None, metavar="OUT.gguf",
              help="Also write a copy of the model with this policy as its default.")
@click.option("--force", "-f", is_flag=True, help="Overwrite OUT.gguf if it exists.")
@policy_options
@model_options
def calibrate(targets, max_over_refusal, mode, confidence, holdout, seed, policy_out, write_default, force,
              **options):
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
    from .operating_point import calibrate_session, parse_targets
    from .report import operating_point_text

    with _session(**options, check=lambda spec, policy, examples: parse_targets(targets, spec, examples)) as s:
        found = calibrate_session(s, targets, max_over_refusal, holdout, seed, mode, confidence)
        click.echo(operating_point_text(found, s.spec))
        policy = found.policy
        policy.save(policy_out)
        click.echo(f"\nwrote {policy_out}  (use it with --policy {policy_out})")
        if write_default:
            _write_default(s, policy, Path(write_default), force)


def _write_default(s, policy: Policy, out: Path, force: bool) -> None:
    if out.resolve() == s.model_path.resolve():
        raise RefusalEdgeError(f"--write-default {out} is the model itself; write a copy under another name")
    if out.exists() and not force:
        raise RefusalEdgeError(f"output {out} already exists; pass --force to overwrite it")
    from ..files import atomic_path
    from ..gguf_annotate import plan_annotation, write_annotation

    plan = plan_annotation(s.model_path, lambda tokens: s.spec.with_default_policy(policy.to_dict()))
    with atomic_path(out) as tmp:
        write_annotation(plan, tmp, progress=True, desc=f"writing {out.name}")
    click.echo(f"wrote {out}: {s.model_path.name} with this policy as its default (refusal.spec default_policy)")
