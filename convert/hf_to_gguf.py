"""`refusal-edge convert`: a Hugging Face llama-family checkpoint -> a refusal-token GGUF (optionally quantized)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping, Sequence

from refusal_edge.files import temp_path_beside
from refusal_edge.metadata import RefusalSpec

from .architectures import FAMILIES
from .errors import ConversionError
from .hf_source import HFCheckpoint, TorchTensor, resolve_source
from .load_check import coarsest
from .llama_tensors import arch_params, tensor_plan
from .output import SPACE_MARGIN, check_output, check_space
from .refusal import resolve_spec
from .tokenizer import llama_cpp_safe_name
from .tokenizer_files import load_tokenizer
from .writer import EMBEDDING_TENSORS, OUTTYPES, tensor_nbytes, tensor_type, write_gguf


@dataclass
class ConvertResult:
    output: Path
    spec: RefusalSpec
    source: Path
    intermediate: Path | None = None  # the unquantized GGUF when kept
    report: dict | None = None
    notes: list[str] = field(default_factory=list)


def load_source(source: str | Path, revision: str | None = None, pre_tokenizer: str | None = None,
                name: str | None = None):
    """(checkpoint, arch params, tokenizer fields, tensor plan), all checked, nothing loaded but headers."""
    root = resolve_source(str(source), revision)
    ckpt = HFCheckpoint(root)
    local = Path(str(source)).expanduser().exists()
    params = arch_params(ckpt.config, name=name or ckpt.config.get("_name_or_path")
                         or (Path(str(source)).expanduser().resolve().name if local else str(source)))
    tokenizer = load_tokenizer(root, pre_tokenizer)
    plan = tensor_plan(ckpt, params)
    rows = dict(plan)["token_embd.weight"].shape[0]
    notes = list(FAMILIES[params.hf_arch].notes(ckpt.config, params))
    if len(tokenizer.tokens) > rows:
        raise ConversionError(
            f"vocabulary/embedding size mismatch: the tokenizer has {len(tokenizer.tokens)} tokens, the embedding "
            f"matrix {rows} rows (were tokens added without resizing the model's embeddings?)"
        )
    if len(tokenizer.tokens) < rows:
        notes.append(f"padded the vocabulary from {len(tokenizer.tokens)} to the embedding's {rows} rows")
        tokenizer = tokenizer.padded_to(rows)
    safe_name, note = llama_cpp_safe_name(params.name, tokenizer.tokens)
    if note:
        notes.append(note)
        params = replace(params, name=safe_name)
    if params.n_vocab != rows:
        if params.n_vocab:
            notes.append(f"config.json says vocab_size {params.n_vocab}; the embedding has {rows} rows")
        params = replace(params, n_vocab=rows)
    return ckpt, params, tokenizer, plan, notes


def convert_checkpoint(
    source: str | Path,
    output: str | Path,
    *,
    outtype: str = "f16",
    quant: str | None = None,
    keep_embeddings: str | None = None,
    categories: Mapping[str, str] | None = None,
    respond: str | None = None,
    default_policy=None,
    pre_tokenizer: str | None = None,
    revision: str | None = None,
    name: str | None = None,
    force: bool = False,
    keep_intermediate: bool = False,
    threads: int | None = None,
    verify: bool = False,
    probes: Sequence | None = None,
    progress: bool = True,
    verbose: bool = False,
    check_load: bool = True,
    log=print,
) -> ConvertResult:
    """Convert ``source`` to ``output``. Unless ``check_load`` is off, every GGUF written is loaded by llama.cpp in
    a child process before it gets its name, and the unquantized one's logits are compared with the source
    checkpoint's where torch is installed (``load_check``); a failure leaves no output behind."""
    if outtype not in OUTTYPES:
        raise ConversionError(f"unsupported --outtype {outtype!r}: choose one of {', '.join(OUTTYPES)}")
    checkpoint = Path(source).expanduser()  # a local checkpoint (directory or its config.json): never written over
    checkpoint = checkpoint.parent if checkpoint.name == "config.json" else checkpoint
    output = check_output(output, force, inputs=(checkpoint,))
    if quant is not None:
        from .quantize import check_quant_type

        check_quant_type(quant)
        if outtype == "q8_0":
            raise ConversionError("--quant re-quantizes from f32/f16/bf16: use --outtype f16 (the default) with it")
    if verify:
        from .verify import require_torch

        require_torch()

    ckpt, params, tokenizer, plan, notes = load_source(source, revision, pre_tokenizer, name)
    spec = resolve_spec(tokenizer.tokens, categories, respond, default_policy)
    for note in notes:
        log(f"note: {note}")
    overrides = {n: keep_embeddings for n in EMBEDDING_TENSORS} if keep_embeddings and quant is None else None
    extra = {"general.source.url": str(source)} if not Path(str(source)).expanduser().exists() else None

    # The output path was checked above and the free space is checked here, once for the whole run: write_gguf and
    # quantize_gguf are told so (``checked``) instead of checking again for each file.
    size = sum(tensor_nbytes(tuple(t.shape), tensor_type(n, tuple(t.shape), outtype, overrides)) for n, t in plan)
    if quant is None:
        check_space(output.parent, size + SPACE_MARGIN)
        checker = _load_checker(check_load, output.name, ckpt.root, coarsest(outtype, keep_embeddings),
                                threads, log)
        try:
            write_gguf(output, params, tokenizer, plan, spec, outtype=outtype, tensor_types=overrides,
                       extra_fields=extra, force=force, progress=progress, checked=True, check=checker)
        finally:
            TorchTensor._open = None  # a PyTorch shard kept open for reading
        result = ConvertResult(output, spec, ckpt.root, notes=notes)
        if verify:
            from .verify import drift_report

            result.report = drift_report(output, {outtype: output}, probes, reference_hf=ckpt.root,
                                         threads=threads, log=log)
        return result

    from .quantize import QUANT_TYPES, quantize_gguf

    bits = 16 if outtype != "f32" else 32
    check_space(output.parent, size + int(size * QUANT_TYPES[quant][1] / bits) + SPACE_MARGIN,
                "the unquantized intermediate file and the quantized output")
    if keep_intermediate:
        intermediate = check_output(output.with_name(f"{output.stem}.{outtype}.gguf"), force)
    else:
        intermediate = temp_path_beside(output, outtype)
    try:
        write_gguf(intermediate, params, tokenizer, plan, spec, outtype=outtype, extra_fields=extra,
                   force=True, progress=progress, checked=True,
                   label=f"writing {output.name} ({outtype}, to quantize)",
                   check=_load_checker(check_load, f"the {outtype} intermediate file", ckpt.root, outtype, threads,
                                       log))
        quantize_gguf(intermediate, output, quant, keep_embeddings=keep_embeddings, force=force, threads=threads,
                      progress=progress, verbose=verbose, checked=True, check_load=check_load, log=log)
        result = ConvertResult(output, spec, ckpt.root, intermediate if keep_intermediate else None, notes=notes)
        if verify:
            from .verify import drift_report

            result.report = drift_report(output, {outtype: intermediate, quant: output}, probes,
                                         reference_hf=ckpt.root, threads=threads, log=log)
        return result
    finally:
        TorchTensor._open = None
        if not keep_intermediate:
            with contextlib.suppress(OSError):
                intermediate.unlink()


def _load_checker(enabled: bool, what: str, source: Path, weight_type: str | None, threads: int | None, log):
    """The ``check`` of ``write_gguf``: llama.cpp loads the temporary file, logits compared with ``source``."""
    if not enabled:
        return None
    from .load_check import check_gguf_loads

    def check(tmp: Path) -> None:
        checked = check_gguf_loads(tmp, source=source, weight_type=weight_type, threads=threads, what=what)
        for note in checked.notes:
            log(f"note: {note}")
        log(checked.summary())

    return check
