"""What this installation runs on, and whether it computes the right numbers: the facts a bug report needs, and
checks that fail loudly (llama.cpp's kernel choice, the default model, and its first-token probabilities on canary
prompts against the values that ship with the package, so a build that computes wrong numbers is caught, not only
one that crashes). The command itself is ``cli_doctor.py``."""

from __future__ import annotations

import json
import platform
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from . import __version__
from .errors import RefusalEdgeError

EXPECTED_PATH = Path(__file__).parent / "assets" / "doctor_expected.json"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def parse_system_info(text: str) -> dict[str, dict[str, str]]:
    """llama.cpp's ``llama_print_system_info()`` ("CPU : SSE3 = 1 | AVX2 = 1 | ... CUDA : ARCHS = 890 | ...") as
    {backend: {feature: value}}."""
    backends: dict[str, dict[str, str]] = {}
    current = None
    for part in (p.strip() for p in text.split("|")):
        if " : " in part:
            current, _, part = part.partition(" : ")
            current = current.strip()
            backends.setdefault(current, {})
        name, sep, value = part.partition(" = ")
        if sep and current is not None:
            backends[current][name.strip()] = value.strip()
    return backends


def compare(measured: dict[str, float], expected: dict[str, float], tolerance: float) -> tuple[bool, str]:
    """Whether every expected probability was measured within ``tolerance``; a one-line account either way."""
    missing = sorted(set(expected) - set(measured))
    if missing:
        return False, f"no probability measured for {missing}"
    worst = max(expected, key=lambda k: abs(measured[k] - expected[k]))
    gap = abs(measured[worst] - expected[worst])
    if gap <= tolerance:  # name the token the model chooses; the worst difference is noise
        top = max(expected, key=expected.get)
        return True, (f"p({top}) = {measured[top]:.4f}, expected {expected[top]:.4f}; largest difference {gap:.4f}, "
                      f"within the tolerance {tolerance:g}")
    return False, (f"p({worst}) = {measured[worst]:.4f}, expected {expected[worst]:.4f}: largest difference "
                   f"{gap:.4f}, OUTSIDE the tolerance {tolerance:g}")


def load_expectations(path: Path) -> dict:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        tolerance = float(raw["tolerance"])
        prompts = [(str(p["prompt"]), {str(k): float(v) for k, v in p["probabilities"].items()})
                   for p in raw["prompts"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RefusalEdgeError(f"cannot read the canary expectations {path}: {exc}") from None
    if not prompts or not 0 < tolerance < 1:
        raise RefusalEdgeError(f"{path}: expected canary prompts and a tolerance between 0 and 1")
    return {"tolerance": tolerance, "prompts": prompts, "measured_on": raw.get("measured_on", "")}


def measure(model, prompts: list[str]) -> list[dict[str, float]]:
    """First-token probabilities of the decision tokens, under a policy with no biases (the model's own)."""
    from .policy import Policy

    out = []
    for prompt in prompts:
        decision = model.decide(prompt, policy=Policy())
        out.append({"respond": decision.respond_probability, **decision.probabilities})
    return out


def canary_checks(model, expectations: dict) -> list[Check]:
    prompts = [p for p, _ in expectations["prompts"]]
    checks = []
    for (prompt, expected), measured in zip(expectations["prompts"], measure(model, prompts)):
        ok, detail = compare(measured, expected, expectations["tolerance"])
        checks.append(Check(f"canary prompt {prompt!r}", ok, detail))
    return checks


def default_model_facts() -> tuple[dict, list[Check]]:
    from .default_model import base_model_path, default_model_path

    path = default_model_path()
    facts = {"path": str(path), "built": path.is_file()}
    try:
        facts["base"] = str(base_model_path())
    except RefusalEdgeError as exc:
        facts["base"] = None
        if not facts["built"]:
            return facts, [Check("default model", False, str(exc))]
    state = "built" if facts["built"] else "not built yet (built on first use, now)"
    return facts, [Check("default model", True, f"{state}: {path}")]


def collect(threads: int | None = 1, expected_path: Path = EXPECTED_PATH, model_path: Path | None = None) -> dict:
    """Every fact and check, as one JSON-able report (``ok``: whether every check passed)."""
    from .engines.llama.kernels import choose, host_facts

    facts = host_facts()  # the llama.cpp build and the CPU, read once (through the llama.cpp engine's loader)
    version, system_info = facts.llama_cpp_python, facts.system_info
    report = {
        "refusal_edge": __version__, "python": sys.version.split()[0], "platform": platform.platform(),
        "llama_cpp_python": version, "llama_cpp_system_info": system_info,
        "backends": parse_system_info(system_info),
        "cpu": {"model": facts.cpu_model, "flags": list(facts.cpu_flags), "amx_path": facts.amx_path},
    }
    checks = []
    try:
        choice = choose()
    except RefusalEdgeError as exc:
        report["kernels"] = None
        checks.append(Check("CPU kernels", False, str(exc)))
        choice = None
    if choice is not None:
        report["kernels"] = {"use_extra_bufts": choice.use_extra_bufts, "mode": choice.mode, "reason": choice.reason,
                             "canary": asdict(choice.canary) if choice.canary else None}
        broken = choice.canary is not None and choice.canary.outcome == "broken"
        checks.append(Check("CPU kernels", not broken, choice.describe()))
    report["default_model"], model_checks = default_model_facts()
    checks += model_checks
    report["prediction"] = None
    if model_path is not None or all(c.ok for c in model_checks):
        model_checks, report["prediction"] = _run_canaries(threads, expected_path, model_path)
        checks += model_checks
    report["checks"] = [asdict(c) for c in checks]
    report["ok"] = all(c.ok for c in checks)
    return report


def _run_canaries(threads: int | None, expected_path: Path, model_path: Path | None) -> tuple[list[Check], dict | None]:
    """The canary prompts' checks, and whether decision-token prediction is on for this model (timed once per
    model, build, CPU and thread count, as ``stream`` would time it: engines/llama/prediction.py)."""
    from .default_model import ensure_default_model
    from .model import RefusalModel

    try:
        expectations = load_expectations(expected_path)
        path = model_path or ensure_default_model(progress=False)
        with RefusalModel.load(path, n_ctx=512, n_threads=threads) as model:
            checks = canary_checks(model, expectations)
            choice = model.engine.prediction_choice(model.spec.token_ids[0])
            threads_used = model.engine.load_facts["threads"]
    except RefusalEdgeError as exc:
        return [Check("canary prompts", False, str(exc))], None
    detail = f"{'on' if choice.on else 'off'} with {threads_used} thread(s): {choice.reason}"
    return checks + [Check("decision-token prediction", True, detail)], {**choice.to_dict(), "threads": threads_used}


def record_expectations(path: Path, prompts: list[str], tolerance: float, threads: int | None = 1) -> dict:
    """Measure the default model on ``prompts`` and write them as the expectations doctor checks against."""
    from .default_model import ensure_default_model
    from .files import write_text
    from .engines.llama.kernels import host_facts
    from .model import RefusalModel

    facts = host_facts()
    with RefusalModel.load(ensure_default_model(), n_ctx=512, n_threads=threads) as model:
        measured = measure(model, prompts)
    raw = {"tolerance": tolerance,
           "measured_on": f"{facts.cpu_model}; llama-cpp-python {facts.llama_cpp_python}",
           "prompts": [{"prompt": p, "probabilities": {k: round(v, 6) for k, v in m.items()}}
                       for p, m in zip(prompts, measured)]}
    write_text(path, json.dumps(raw, indent=1) + "\n")
    return raw
