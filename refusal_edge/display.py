"""How decisions look in a terminal: one compact line, the forced token first, then the top probabilities."""

from __future__ import annotations

import click

from .decision import Decision
from .metadata import RESPOND_TOKEN, short_names
from .policy import Policy


def decision_line(decision: Decision, top: int = 3, color: bool = True) -> str:
    names = short_names(decision.probabilities)  # every category of the model: the same names as the dials page
    probs = sorted(decision.probabilities.items(), key=lambda kv: kv[1], reverse=True)[:top]
    shown = " ".join(f"{names[name]} {p:.2f}" for name, p in probs)
    if decision.refused:
        head = f"⟨{decision.category}⟩ refuse"
        style = {"fg": "red"}
    elif decision.token == RESPOND_TOKEN:
        head = "⟨respond⟩"
        style = {"fg": "green"}
    else:
        head = f"⟨model's own: {decision.token!r}⟩"
        style = {"fg": "yellow"}
    how = "forced" if decision.forced else "model's choice"
    text = (f"{head} · respond {decision.respond_probability:.2f} · {shown} · {decision.rule}, {how}, "
            f"{decision.prefill_ms:.0f} ms")
    if decision.meta.get("answered_by"):  # guard mode: the model that writes the answer (guarded.py)
        text += f" · answered by {decision.meta['answered_by']}"
    return click.style(text, dim=True, **style) if color else text


def policy_summary(policy: Policy, categories) -> str:
    lines = [f"rule: {policy.rule}    default threshold: {policy.threshold:g}    temperature: {policy.temperature:g}"]
    for name in categories:
        own = name in policy.thresholds
        threshold = f"{policy.threshold_for(name):g}" + ("" if own else " (default)")
        bias = policy.biases.get(name)
        lines.append(f"  {name:<32} threshold {threshold:<14}" + (f" bias {bias:+g}" if bias else ""))
    if policy.biases.get("respond"):
        lines.append(f"  {'respond':<32} bias {policy.biases['respond']:+g}")
    return "\n".join(lines)
