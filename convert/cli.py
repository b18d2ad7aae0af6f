"""CLI verbs `convert`, `annotate` and `quantize` (mapped from refusal_edge.cli.VERBS)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import click

from refusal_edge.options import THREADS_OPTION, silence_progress

from .errors import ConversionError
from .quantize import EMBEDDING_TYPES, QUANT_TYPES
from .safetensors_out import DTYPES as HF_OUTTYPES
from .writer import OUTTYPES


JSON_OPTION = click.option("--json", "as_json", is_flag=True,
                           help="Print what was written as one JSON object (path, size, refusal token ids).")


def _refusal_options(func):
    @click.option("--category", "categories", multiple=True, metavar="NAME=TOKEN",
                  help='A refusal category and its token, e.g. "Humanizing requests=[Humanizing requests]". '
                       "Repeatable; default: discover the paper's tokens in the vocabulary.")
    @click.option("--respond", metavar="TOKEN", default=None, help="The respond token [default: [respond]].")
    @click.option("--default-policy", type=click.Path(dir_okay=False, exists=True), default=None,
                  help="A policy file (.toml/.json) stored as the model's default policy.")
    @click.option("--force", "-f", is_flag=True, help="Overwrite the output if it exists.")
    @click.option("--quiet", "-q", is_flag=True, callback=silence_progress, help="No progress display or summary.")
    @JSON_OPTION
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func(*args, **kwargs)

    return wrapper


def _verify_options(func):
    @click.option("--verify", is_flag=True,
                  help="Report how far the refusal-token probabilities drift (table + JSON beside the output).")
    @click.option("--probe", "probe_file", type=click.Path(dir_okay=False, exists=True), default=None,
                  help="Probe prompts for --verify: .txt (one a line), .jsonl or .json [default: built in].")
    @THREADS_OPTION
    @click.option("--verbose", is_flag=True, help="Show llama.cpp's own log (quantizer, model loads).")
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func(*args, **kwargs)

    return wrapper


def _echo(quiet: bool):
    return (lambda *a, **k: None) if quiet else (lambda msg: click.echo(msg, err=True))


def _probes(probe_file):
    if probe_file is None:
        return None
    from .probes import load_probes

    return load_probes(probe_file)


def _summary(path: Path, spec, log, as_json: bool = False, **more) -> None:
    """The line that says what was written, or with --json the same as one JSON object on stdout."""
    from refusal_edge.files import human_size

    if as_json:
        tokens = {r.token: r.id for r in spec.refs} if spec is not None else None
        click.echo(json.dumps({"output": str(path), "bytes": path.stat().st_size, "refusal_tokens": tokens,
                               **{k: (str(v) if isinstance(v, Path) else v) for k, v in more.items()}}))
        return
    if spec is None:
        log(f"wrote {path}; it has no refusal metadata (add it with `refusal-edge annotate`)")
        return
    tokens = ", ".join(f"{r.token}={r.id}" for r in spec.refs)
    log(f"wrote {path} ({human_size(path.stat().st_size)}); refusal tokens (CONTROL): {tokens}")


@click.command("convert")
@click.argument("source")
@click.option("--output", "-o", required=True, type=click.Path(),
              help="The GGUF to write (with --to hf: the checkpoint directory).")
@click.option("--to", "target", type=click.Choice(["gguf", "hf"]), default="gguf", show_default=True,
              help="hf: export a GGUF SOURCE as a Hugging Face checkpoint directory (for vLLM, transformers).")
@click.option("--outtype", type=click.Choice(sorted({*OUTTYPES, *HF_OUTTYPES})), default=None,
              help="Tensor type written directly (with --quant: of the intermediate file) [default: f16; f32 "
                   "with --to hf, which takes f32 or bf16].")
@click.option("--quant", type=click.Choice(list(QUANT_TYPES), case_sensitive=False), default=None,
              help="Then quantize with llama.cpp's quantizer (e.g. q4_k_m).")
@click.option("--keep-embeddings", type=click.Choice(list(EMBEDDING_TYPES)), default=None,
              help="Keep token embeddings and the output matrix at this type (the refusal rows are the newest "
                   "weights).")
@click.option("--keep-intermediate", is_flag=True, help="With --quant: keep OUT_STEM.<outtype>.gguf too.")
@click.option("--pre-tokenizer", default=None, help="Override llama.cpp's pre-tokenizer type (e.g. llama-bpe).")
@click.option("--revision", default=None, help="Hub revision (branch, tag or commit) for a hub id SOURCE.")
@click.option("--name", default=None, help="general.name of the GGUF.")
@_refusal_options
@_verify_options
def convert(source, output, target, outtype, quant, keep_embeddings, keep_intermediate, pre_tokenizer, revision, name,
            categories, respond, default_policy, force, quiet, as_json, verify, probe_file, threads, verbose):
    """Convert a Hugging Face refusal-token checkpoint (directory or hub id) to GGUF.

    \b
    Examples:
      refusal-edge convert ./zephyr-llama3-refusal -o model.gguf
      refusal-edge convert tomg-group-umd/zephyr-llama3-8b-sft-refusal-n-contrast-multiple-tokens \\
          -o model.q4_k_m.gguf --quant q4_k_m --keep-embeddings q8_0 --verify
      refusal-edge convert model.gguf --to hf -o ./model-hf    # a checkpoint vLLM serves
    """
    if target == "hf" or str(source).lower().endswith(".gguf"):
        return _export_hf(source, output, target, outtype, quant, force, quiet, as_json)
    outtype = outtype or "f16"
    if outtype not in OUTTYPES:
        raise ConversionError(f"--outtype {outtype} is for --to hf; a GGUF takes {', '.join(OUTTYPES)}")
    from .hf_to_gguf import convert_checkpoint
    from .refusal import parse_categories

    log = _echo(quiet)
    result = convert_checkpoint(
        source, output, outtype=outtype, quant=quant.lower() if quant else None, keep_embeddings=keep_embeddings,
        categories=parse_categories(categories), respond=respond, default_policy=default_policy,
        pre_tokenizer=pre_tokenizer, revision=revision, name=name, force=force, keep_intermediate=keep_intermediate,
        threads=threads, verify=verify, probes=_probes(probe_file), progress=not quiet, verbose=verbose, log=log,
    )
    _summary(result.output, result.spec, log, as_json, intermediate=result.intermediate)
    if result.intermediate is not None and not as_json:
        log(f"kept the unquantized file {result.intermediate}")


def _export_hf(source, output, target, outtype, quant, force, quiet, as_json):
    from .gguf_to_hf import export_gguf

    if target != "hf":
        raise ConversionError(f"{source} is a GGUF already: pass --to hf to export it as a Hugging Face checkpoint")
    if quant:
        raise ConversionError("--quant makes a GGUF; --to hf writes f32 or bf16 safetensors")
    result = export_gguf(source, output, outtype=outtype or "f32", force=force, log=_echo(quiet or as_json))
    if as_json:
        click.echo(json.dumps({"output": str(result.output), "format": "hf", "outtype": outtype or "f32",
                               "tensors": result.n_tensors}))


@click.command("annotate")
@click.argument("source", type=click.Path(dir_okay=False))
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="The GGUF to write.")
@_refusal_options
def annotate(source, output, categories, respond, default_policy, force, quiet, as_json):
    """Add refusal metadata to any GGUF (e.g. one made by llama.cpp's convert_hf_to_gguf.py).

    The refusal tokens become CONTROL tokens; tensors are copied untouched.

    \b
    Examples:
      refusal-edge annotate llama3-refusal.f16.gguf -o annotated.gguf
      refusal-edge annotate model.gguf -o binary.gguf --respond "[respond]" --category "refuse=[refuse]"
      refusal-edge annotate model.gguf -o tuned.gguf --default-policy policy.toml
    """
    from .annotate import annotate_gguf
    from .refusal import parse_categories

    log = _echo(quiet)
    spec = annotate_gguf(source, output, categories=parse_categories(categories), respond=respond,
                         default_policy=default_policy, force=force, progress=not quiet, log=log)
    _summary(Path(output), spec, log, as_json)


@click.command("quantize")
@click.argument("source", type=click.Path(dir_okay=False))
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="The GGUF to write.")
@click.option("--type", "qtype", required=True, type=click.Choice(list(QUANT_TYPES), case_sensitive=False),
              help="Quantization type, e.g. q4_k_m.")
@click.option("--keep-embeddings", type=click.Choice(list(EMBEDDING_TYPES)), default=None,
              help="Keep token embeddings and the output matrix at this type.")
@click.option("--allow-requantize", is_flag=True,
              help="Accept an already quantized input (quality suffers twice: prefer an f16/bf16/f32 source).")
@click.option("--force", "-f", is_flag=True, help="Overwrite the output if it exists.")
@click.option("--quiet", "-q", is_flag=True, callback=silence_progress, help="No progress display or summary.")
@JSON_OPTION
@_verify_options
def quantize(source, output, qtype, keep_embeddings, allow_requantize, force, quiet, as_json, verify, probe_file,
             threads, verbose):
    """Quantize a refusal-token GGUF with llama.cpp's quantizer; the refusal metadata is kept.

    With --verify the input GGUF is the reference of the drift report.

    \b
    Examples:
      refusal-edge quantize model.f16.gguf -o model.q4_k_m.gguf --type q4_k_m
      refusal-edge quantize model.f16.gguf -o model.q5_k_m.gguf --type q5_k_m --keep-embeddings q8_0 --verify
    """
    from .quantize import quantize_gguf

    log = _echo(quiet)
    probes = _probes(probe_file)
    path = quantize_gguf(source, output, qtype, keep_embeddings=keep_embeddings, force=force, threads=threads,
                         progress=not quiet, verbose=verbose, allow_requantize=allow_requantize,
                         log=log)
    if verify:
        from .verify import drift_report

        drift_report(path, {qtype.lower(): path}, probes, reference_gguf=Path(source), threads=threads, log=log)
    from refusal_edge.metadata import RefusalSpec

    from refusal_edge.gguf_header import read_fields

    spec = RefusalSpec.from_gguf_fields(read_fields(path, ["refusal.spec"]))
    _summary(path, spec, log, as_json, type=qtype.lower())


__all__ = ["convert", "annotate", "quantize", "ConversionError"]
