"""How an evaluation is shown and saved: terminal tables, report.json, and a per-prompt CSV."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from ..metadata import RefusalSpec, short_name
from . import metrics
from .analysis import OTHER_COL
from .batch import OWN, Probabilities, choice_names
from .calibrate import Target
from .data import Example
from .operating_point import OperatingPoint
from ..files import atomic_path, write_text


def fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def table(header: Sequence[str], rows: Sequence[Sequence], first_width: int | None = None) -> str:
    cells = [[str(c) for c in header]] + [[c if isinstance(c, str) else fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    if first_width:
        widths[0] = max(widths[0], first_width)
    lines = []
    for n, row in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render(report: dict, subcategories: bool = False) -> str:
    """The terminal view of a report built by cli.evaluate."""
    ev = report["evaluation"]
    out = [_header(report), ""]
    out.append("Decision rules on the same scores (* = the policy's rule)")
    out.append(table(
        ["rule", "refusal", "over-refusal", "precision", "F1", "category acc."],
        [[rule + (" *" if rule == ev["rule"] else ""), m["recall"], m["over_refusal"], m["precision"], m["f1"],
          m["category_accuracy"]] for rule, m in ((r, d["overall"]) for r, d in ev["rules"].items())],
    ))
    out += ["", f"By category ({ev['rule']} rule; AUROC/AP rank p(category token) against all benign prompts)"]
    decisions, ranking = ev["decisions"], ev["ranking"]
    rows = []
    for name, g in decisions["by_category"].items():
        r = ranking.get(name, {})
        rows.append([name, g["should_refuse"], g["refusal_rate"], g["category_accuracy"], g["benign"],
                     g["over_refusal"], r.get("auroc"), r.get("average_precision")])
    overall, r = decisions["overall"], ranking["overall"]
    rows.append(["overall (p any refusal token)", overall["tp"] + overall["fn"], overall["recall"],
                 overall["category_accuracy"], overall["fp"] + overall["tn"], overall["over_refusal"], r["auroc"],
                 r["average_precision"]])
    out.append(table(["category", "should refuse", "refused", "right token", "benign", "over-refused", "AUROC",
                      "AP"], rows))
    if subcategories:
        out += ["", "By subcategory"]
        out.append(table(["category / subcategory", "should refuse", "refused", "benign", "over-refused"],
                         [[k, g["should_refuse"], g["refusal_rate"], g["benign"], g["over_refusal"]]
                          for k, g in decisions["by_subcategory"].items()]))
    conf = decisions["confusion"]
    out += ["", "Confusion (rows: what the prompt should get, columns: the first token chosen)"]
    out.append(table([""] + [short_name(c) for c in conf["cols"]],
                     [[row] + counts for row, counts in zip(conf["rows"], conf["counts"])]))
    if report.get("results"):
        out += ["", results_table(report["results"])]
    if report.get("sweep"):
        out += ["", _sweep_table(report["sweep"])]
    if report.get("generation"):
        out += ["", _generation_table(report["generation"])]
    return "\n".join(out)


def _header(report: dict) -> str:
    model, scoring = report["model"], report["scoring"]
    lines = [f"model   {model['path']} (sha256 {model['sha256'][:12]})"]
    for d in report["data"]:
        skipped = f", {d['skipped']} malformed rows skipped" if d["skipped"] else ""
        lines.append(f"data    {d['path']}: {d['should_refuse']} should refuse, {d['benign']} benign "
                     f"[{d['format']}]{skipped}")
    reuse = ""
    if scoring["prefill_tokens"]:
        reuse = f"; {scoring['reused_tokens']}/{scoring['prefill_tokens']} prompt tokens reused from the KV cache"
    lines.append(f"scores  {scoring['scored']} prefilled now, {scoring['from_store']} from {scoring['store']}{reuse}")
    if scoring["skipped"]:
        lines.append(f"        {len(scoring['skipped'])} prompts skipped, e.g. {scoring['skipped'][0]}")
    policy = report["evaluation"]["policy"]
    own = ", ".join(f"{short_name(k)} {v:g}" for k, v in policy["thresholds"].items())
    bias = ", ".join(f"{short_name(k)} {v:+g}" for k, v in policy["biases"].items())
    lines.append(f"policy  {policy['rule']}, threshold {policy['threshold']:g}" + (f" ({own})" if own else "")
                 + (f", biases {bias}" if bias else ""))
    return "\n".join(lines)


def interval_text(r: dict | None) -> str:
    return "-" if r is None else f"{r['value']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]"


def results_table(results: dict) -> str:
    """Per task: the two rates and AUROC with their 95 % intervals (what a results file reports)."""
    rows = [[task, b["should_refuse"], interval_text(b["refusal_rate"]), b["benign"], interval_text(b["over_refusal"]),
             interval_text(b["auroc"])] for task, b in results.items()]
    return ("Results per task (95 % intervals: exact binomial for rates, bootstrap for AUROC)\n"
            + table(["task", "should refuse", "refused", "benign", "over-refused", "AUROC"], rows))


def _sweep_table(sweep: dict) -> str:
    points = sweep["points"]
    groups = list(points[0]["by_category"]) if points else []
    header = ["threshold", "refusal", "over-refusal", "precision", "F1"] + [short_name(g) for g in groups]
    rows = [[f"{p['threshold']:g}", p["refusal_rate"], p["over_refusal"], p["precision"], p["f1"]]
            + [p["by_category"][g] for g in groups] for p in points]
    title = f"Sweep of {'every threshold' if sweep['category'] == 'all' else sweep['category']} ({sweep['rule']} rule)"
    return title + "\n" + table(header, rows)


def _generation_table(gen: dict) -> str:
    a = gen["agreement"]
    lines = [f"Answers ({gen['prompts']} decoded, up to {gen['max_tokens']} tokens, judged by {gen['judge']})",
             table(["", "rate"], [
                 ["answer reads as a refusal", a["answer_refusal_rate"]],
                 ["first token and answer agree", a["agreement"]],
                 [f"[respond] but the answer refuses (of {a['respond_tokens']})", a["respond_token_but_refusal"]],
                 [f"refusal token but the answer complies (of {a['refusal_tokens']})", a["refusal_token_but_answer"]],
             ])]
    if gen.get("by_category"):
        lines += ["", table(["should get", "prompts", "token refusal", "answer refusal", "agreement"],
                            [[k, v["prompts"], v["token_refusal_rate"], v["answer_refusal_rate"], v["agreement"]]
                             for k, v in gen["by_category"].items()])]
    return "\n".join(lines)


# files --------------------------------------------------------------------------------------------
def write_json(path: Path, report: dict) -> None:
    write_text(path, json.dumps(report, indent=2, ensure_ascii=False, default=json_default) + "\n")


def write_rows_csv(path: Path, examples: Sequence[Example], choices: np.ndarray, probs: Probabilities,
                   spec: RefusalSpec, answers: Sequence[str] | None = None,
                   answer_refused: Sequence[bool] | None = None) -> None:
    """One row per prompt: where it came from, what it should get, the token chosen and every probability."""
    header = ["source", "line", "id", "category", "subcategory", "should_refuse", "prompt", "first_token",
              "refused", "p_respond", "p_refusal"] + [f"p_{short_name(n)}" for n in spec.category_names]
    if answers is not None:
        header += ["answer", "answer_refuses", "agrees"]
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for i, sample in enumerate(sample_rows(examples, [""] * len(examples), choices, probs, spec)):
            c = int(choices[i])
            row = [sample[k] if sample[k] is not None else "" for k in ("source", "line", "id", "category",
                                                                         "subcategory")]
            row += [int(sample["should_refuse"]), sample["prompt"], sample["first_token"], int(sample["refused"])]
            row += [f"{sample[k]:.6g}" for k in ("p_respond", "p_refusal")]
            row += [f"{p:.6g}" for p in sample["p_categories"].values()]
            if answers is not None:
                row += [answers[i], int(answer_refused[i]), int(bool(answer_refused[i]) == (c > 0))]
            writer.writerow(row)


def sample_rows(examples: Sequence[Example], tasks: Sequence[str], choices: np.ndarray, probs: Probabilities,
                spec: RefusalSpec) -> list[dict]:
    """One dict per prompt (``--log-samples``): its task and origin, what it should get, the first token chosen
    and the probabilities the decision saw."""
    names = choice_names(spec)
    refusal = probs.refusal
    rows = []
    for i, e in enumerate(examples):
        c = int(choices[i])
        rows.append({"task": tasks[i], "source": e.source, "line": e.line, "id": e.id, "category": e.category,
                     "subcategory": e.subcategory, "should_refuse": e.should_refuse, "prompt": e.prompt,
                     "first_token": OTHER_COL if c == OWN else names[c], "refused": c > 0,
                     "p_respond": float(probs.respond[i]), "p_refusal": float(refusal[i]),
                     "p_categories": {n: float(p) for n, p in zip(spec.category_names, probs.categories[i])}})
    return rows


def json_default(value):
    """numpy scalars and arrays as JSON numbers and lists (json.dumps's ``default``)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def operating_point_text(op: OperatingPoint, spec: RefusalSpec) -> str:
    """What calibrate prints: the split, each mode's thresholds, the promise, and the operating points."""
    y, (_, cal), (_, held) = op.y, *op.parts
    lines = [f"calibration part: {len(cal)} prompts ({int(y[cal].sum())} should refuse, {int((~y[cal]).sum())} benign); "
             f"held out: {len(held)} ({int(y[held].sum())} should refuse, {int((~y[held]).sum())} benign)"]
    if not (~y).any():
        lines.append("note: no benign prompts, so over-refusal is not measured; add --contrast data")
    columns = []
    for r in op.results:
        chosen = " (written)" if r is op.chosen else " (for comparison)"
        if r.error:
            lines.append(f"{r.mode} mode{chosen}: no thresholds: {r.error}")
            continue
        lines.append(f"{r.mode} mode{chosen}: " + _thresholds_text(spec, r.thresholds))
        if r.promises:
            lines.append(promise_text(r.promises, r.confidence))
        columns += [(f"{r.mode}: {name}" if len(op.results) > 1 else name, r.refused, rows) for name, rows in op.parts]
    lines.append("")
    lines.append(operating_table(op.targets, op.max_over_refusal, y, op.gold, columns))
    return "\n".join(lines)


def _thresholds_text(spec: RefusalSpec, thresholds) -> str:
    if len(set(map(float, thresholds))) == 1 and len(thresholds) > 1:
        return f"one threshold {float(thresholds[0]):g} for every category"
    return "thresholds " + ", ".join(f"{short_name(n)} {t:g}" for n, t in zip(spec.category_names, thresholds))


def promise_text(promises, confidence: float) -> str:
    """The guarantee in one line: what it promises, how sure, from how much data, and what it assumes."""
    each = promises[0].confidence
    stated = "; ".join(
        f"{p.target.metric} of {'all' if p.target.scope == 'overall' else short_name(p.target.scope)} "
        f"{p.target.op} {p.target.value:g} (Clopper-Pearson {'upper' if p.target.op == '<=' else 'lower'} bound "
        f"{p.bound:.3f}: {p.events} of {p.rows} refused)" for p in promises)
    split = f", each of {len(promises)} at {each:.4g} (Bonferroni)" if len(promises) > 1 else ""
    return (f"guarantee: with probability >= {confidence:g} over the calibration sample{split}, on new prompts "
            f"exchangeable with it (same distribution, drawn independently): {stated}. "
            "Prompts from another distribution are not covered.")


def operating_table(targets: Sequence[Target], max_over_refusal: float, y, gold, columns) -> str:
    """Rows: targets and rates; columns: (label, refused, rows) such as ("guaranteed: held out", ...)."""
    columns = [(name, refused, r) for name, refused, r in columns if len(r)]
    rows = []
    for t in targets:
        row = [str(t)]
        for _, refused, r in columns:
            value = t.measure(refused[r], y[r], gold[r])
            row.append(f"{metrics_text(value)} {'ok' if t.met(value) else 'MISSED'}")
        rows.append(row)
    over = Target("overall", "over-refusal", "<=", max_over_refusal)
    rows.append([f"over-refusal <= {max_over_refusal:g}"] + [
        f"{metrics_text(over.measure(refused[r], y[r], gold[r]))} "
        f"{'ok' if over.met(over.measure(refused[r], y[r], gold[r])) or not (~y[r]).any() else 'MISSED'}"
        for _, refused, r in columns])
    for key, label in (("recall", "refusal rate (all should-refuse)"), ("precision", "precision"), ("f1", "F1")):
        rows.append([label] + [metrics_text(metrics.binary_metrics(refused[r], y[r])[key])
                               for _, refused, r in columns])
    for name in dict.fromkeys(gold[y]):
        rows.append([f"  refusal rate: {short_name(name)}"] + [
            metrics_text(metrics.rate(refused[r][y[r] & (gold[r] == name)])) for _, refused, r in columns])
    return table(["operating point"] + [name for name, _, _ in columns], rows)


def metrics_text(value) -> str:
    return "-" if value is None else f"{value:.3f}"
