"""Property-based tests (Hypothesis) of the GGUF header reader on mutated copies of a real file: it raises only its own
errors, reads an intact header identically whatever happened to the tensor data, refuses exactly the files too short
for their tensors, and reads what gguf-py (the reference reader) reads.
"""

import os
import struct
import tempfile
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402

from outcomes import Outcomes  # noqa: E402
from test_properties import FAST  # noqa: E402
from refusal_edge.errors import RefusalEdgeError  # noqa: E402
from refusal_edge.gguf_header import check_data, read_header, tensor_extents  # noqa: E402
from refusal_edge.inspection import describe  # noqa: E402


class Original:
    """The tiny GGUF's bytes, with a short repr for Hypothesis's failure reports."""

    def __init__(self, path):
        import gguf

        header = read_header(path)
        self.data, self.header_end, self.header = path.read_bytes(), header.data_offset, header
        # the bytes its tensors need, by gguf-py (the reference reader), not by the reader under test
        self.needed = max(t.data_offset + t.n_bytes for t in gguf.GGUFReader(str(path)).tensors)

    def __repr__(self) -> str:
        return f"<tiny GGUF, {len(self.data)} bytes>"


@pytest.fixture(scope="module")
def original(tiny_gguf):
    return Original(tiny_gguf)


# (kind, where, position, byte, u64): "header" mutations stay within the header and the first data bytes, which is
# what the reader parses; "anywhere" ones reach the tensor data too.
MUTATION = st.tuples(st.sampled_from(["set", "set", "set", "u64", "cut", "insert", "delete"]),
                     st.sampled_from(["header", "anywhere"]), st.integers(0, 1 << 30),
                     st.integers(0, 255), st.sampled_from([0, 1, 255, 1 << 31, 1 << 62, (1 << 64) - 1]))


def mutate(data: bytes, header_end: int, mutations) -> bytes:
    buf = bytearray(data)
    for kind, where, pos, byte, big in mutations:
        at = pos % max(1, min(len(buf), header_end + 64) if where == "header" else len(buf))
        if kind == "set" and at < len(buf):
            buf[at] = byte
        elif kind == "u64":
            buf[at:at + 8] = struct.pack("<Q", big)
        elif kind == "cut":
            del buf[at:]
        elif kind == "insert":
            buf[at:at] = bytes([byte]) * (1 + byte % 9)
        else:
            del buf[at:at + 1 + byte % 9]
    return bytes(buf)


def same_as_gguf_py(header, name: str) -> bool:
    """A header the reader accepted reads the same in gguf-py, when gguf-py reads it at all (it rejects some files
    this reader accepts, e.g. repeated keys; which reader is stricter is not the point, agreement is)."""
    import gguf

    try:
        reference = gguf.GGUFReader(name)
    except Exception:  # noqa: BLE001 - any failure of the reference reader means no reference for this file
        return False
    assert set(header.kv) == {k for k in reference.fields if not k.startswith("GGUF.")}
    assert header.data_offset == reference.data_offset
    assert [(n, offset, kind) for n, offset, kind in tensor_extents(header)] == \
        [(t.name, t.data_offset - reference.data_offset, int(t.tensor_type)) for t in reference.tensors]
    return True


def test_the_header_reader_reads_what_gguf_py_reads_and_raises_only_its_own_errors(original):
    seen = Outcomes()

    @settings(FAST, max_examples=300)  # 300, not 150: the stricter reader (issue 35) leaves fewer files readable
    @given(mutations=st.lists(MUTATION, min_size=1, max_size=4))
    def check(mutations):
        mutated = mutate(original.data, original.header_end, mutations)
        header_intact = mutated[:original.header_end] == original.data[:original.header_end]
        fd, name = tempfile.mkstemp(suffix=".gguf")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(mutated)
            try:
                header = read_header(name)
                for key in header.kv:
                    header.get(key)
                if header_intact:  # only tensor data changed: the same header, whatever the data
                    assert (header.kv, header.tensor_infos, header.data_offset) == \
                        (original.header.kv, original.header.tensor_infos, original.header.data_offset)
                try:
                    check_data(header)
                except RefusalEdgeError:
                    assert not header_intact or len(mutated) < original.needed, "intact data refused"
                    seen["header read, data refused"] += 1
                    raise
                assert not header_intact or len(mutated) >= original.needed, "truncated data accepted"
                describe(Path(name))  # what `refusal-edge inspect` prints
                seen["read whole"] += 1
                seen["compared with gguf-py"] += same_as_gguf_py(header, name)
            except RefusalEdgeError:
                assert not (header_intact and len(mutated) >= original.needed), "an intact file was refused"
                seen["refused"] += 1
        finally:
            os.unlink(name)

    check()
    # "read whole" 15, not 20: inspect now refuses metadata of the wrong type too (a vocabulary that is not a list of
    # strings), which some mutations of a type tag produce (issue 35)
    seen.require(**{"read whole": 15, "compared with gguf-py": 15, "header read, data refused": 1, "refused": 50})
