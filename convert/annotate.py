"""`refusal-edge annotate`: add the refusal metadata (and CONTROL type for the refusal tokens) to any GGUF.

The copy itself is the runtime's (``refusal_edge.gguf_annotate``: header rewritten, tensor data copied verbatim);
this adds what a conversion output needs: the refusal tokens named on the command line or discovered, no
overwrite without --force, a disk-space check and an atomic rename.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from refusal_edge.errors import GGUFFormatError
from refusal_edge.gguf_annotate import plan_annotation, write_annotation
from refusal_edge.metadata import RefusalSpec

from .errors import ConversionError
from .load_check import check_gguf_loads
from .output import atomic_output, check_output, check_space
from .refusal import resolve_spec


def annotate_gguf(
    source: str | os.PathLike,
    output: str | os.PathLike,
    *,
    categories: Mapping[str, str] | None = None,
    respond: str | None = None,
    default_policy=None,
    force: bool = False,
    progress: bool = True,
    check_load: bool = True,
    threads: int | None = None,
    log=None,
) -> RefusalSpec:
    """Copy ``source`` to ``output`` with the refusal metadata; unless ``check_load`` is off, llama.cpp must load the
    result (``load_check``) before it gets its name."""
    source = Path(source)
    output = check_output(output, force, inputs=(source,))
    try:
        plan = plan_annotation(source, lambda tokens: resolve_spec(tokens, categories, respond, default_policy))
    except GGUFFormatError as exc:
        raise ConversionError(str(exc)) from None
    check_space(output.parent, plan.size + (16 << 20))
    with atomic_output(output, force) as tmp:
        write_annotation(plan, tmp, progress, f"writing {output.name}")
        if check_load:
            checked = check_gguf_loads(tmp, threads=threads, what=output.name)
            if log is not None:
                log(checked.summary())
    return plan.spec
