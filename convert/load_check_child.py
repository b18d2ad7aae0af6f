"""The load check's child process: ``python -m refusal_edge.convert.load_check_child GGUF OUT_DIR THREADS``.

Loads a freshly written GGUF with llama.cpp exactly as the runtime will (``load_llama``: this machine's kernels),
reads its vocabulary and decision tokens, tokenizes a sample text and decodes a 2-token batch; prints one result
line (``MARKER`` + JSON) and leaves the two logit rows in OUT_DIR/logits.npy. llama.cpp's own log goes to stderr,
where the parent (``load_check.check_gguf_loads``) finds the line that names what it refused; an abort or a crash
kills only this process.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

MARKER = "refusal-edge load check: "
# Plain ASCII (letters, punctuation, digits, a newline): where llama.cpp and the checkpoint's own tokenizer split this
# differently, the pre-tokenizer is wrong, not a Unicode corner case.
SAMPLE_TEXT = "Hello world, how are you today? Please tell me a story about the sea: 12345 and 3.14!\nThank you."
GGML_TYPE_F32 = 0  # an f32 KV cache: llama.cpp's default f16 one alone moves logits by ~1e-2


def check(path: Path, out_dir: Path, threads: int) -> dict:
    import numpy as np

    from refusal_edge.engines.llama.vocab import LlamaTokenizer, load_llama
    from refusal_edge.errors import MetadataError
    from refusal_edge.gguf_header import read_fields
    from refusal_edge.metadata import RefusalSpec

    t0 = time.perf_counter()
    llm = load_llama(path, verbose=True, n_ctx=64, n_threads=threads, n_threads_batch=threads, n_batch=64,
                     logits_all=True, type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32)
    loaded = time.perf_counter()
    tokenizer = LlamaTokenizer(llm, path)
    problems: list[str] = []
    decision: list[dict] = []
    try:
        spec = RefusalSpec.from_gguf_fields(read_fields(path, ["refusal.spec"]))
    except MetadataError as exc:
        spec, problems = None, [str(exc)]
    if spec is not None:
        try:
            spec.check_against(tokenizer.token_text, tokenizer.is_control, tokenizer.n_vocab)
        except MetadataError as exc:
            problems.append(str(exc))
        for ref in spec.refs:
            typed = ref.id in tokenizer.tokenize(ref.token, special=False)
            if typed:
                problems.append(f"typing the text {ref.token!r} produces the decision token {ref.id}")
            decision.append({"token": ref.token, "id": ref.id, "control": tokenizer.is_control(ref.id)})
    sample = tokenizer.tokenize(SAMPLE_TEXT, special=False)
    ids = (sample + [0, 0])[:2]
    llm.eval(ids)  # one batch of two tokens, logits at both
    logits = np.array(llm.scores[:2], dtype=np.float32)
    decoded = time.perf_counter()
    if not np.isfinite(logits).all():
        problems.append("the 2-token decode gave logits that are not finite")
    np.save(out_dir / "logits.npy", logits)
    llm.close()
    return {"n_vocab": tokenizer.n_vocab, "sample": sample, "decode": ids, "decision": decision,
            "problems": problems, "load_s": loaded - t0, "decode_s": decoded - loaded}


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m refusal_edge.convert.load_check_child GGUF OUT_DIR THREADS", file=sys.stderr)
        return 2
    try:
        result = check(Path(argv[0]), Path(argv[1]), int(argv[2]))
    except Exception as exc:  # a load refused: the parent reports llama.cpp's own log lines with this
        result = {"error": f"{type(exc).__name__}: {exc}"}
    print(MARKER + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
