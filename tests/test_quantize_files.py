"""`quantize` (and every writer built on convert.output.atomic_output): nothing left behind by a killed run, and
the output's mode follows the umask like any other new file."""

import os
import signal
import stat
import subprocess
import sys

import pytest
from click.testing import CliRunner

from conftest import THREADS
from refusal_edge.convert.quantize import quantize_gguf
from refusal_edge.cli import main

KILLED_WRITER = """
import sys, time
from pathlib import Path
from refusal_edge.convert.output import atomic_output
with atomic_output(Path(sys.argv[1])) as tmp:
    tmp.write_bytes(b"half a model")
    print(tmp, flush=True)
    time.sleep(120)
"""


def partials(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".partial"))


def test_the_next_run_removes_what_a_sigkilled_run_left(tiny_gguf, tmp_path):
    out = tmp_path / "m.q8_0.gguf"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(out)], stdout=subprocess.PIPE, text=True,
                              env=env)
    left = writer.stdout.readline().strip()
    writer.send_signal(signal.SIGKILL)  # no handler runs: the partial file stays
    writer.wait()
    assert partials(tmp_path) == [os.path.basename(left)]
    busy = tmp_path / f".{out.name}.{os.getpid()}.abc.partial"  # a writer that is still alive (this process)
    busy.write_bytes(b"in progress")
    quantize_gguf(tiny_gguf, out, "q8_0", threads=THREADS, progress=False)
    assert partials(tmp_path) == [busy.name] and out.stat().st_size > 0


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_the_output_mode_follows_the_umask_also_with_force(tiny_gguf, tmp_path, umask, mode):
    out = tmp_path / "m.gguf"
    previous = os.umask(umask)
    try:
        quantize_gguf(tiny_gguf, out, "q8_0", threads=THREADS, progress=False)
        assert stat.S_IMODE(out.stat().st_mode) == mode
        result = CliRunner().invoke(main, ["quantize", str(tiny_gguf), "-o", str(out), "--type", "q8_0", "--force",
                                           "--quiet", "--threads", str(THREADS)])
        assert result.exit_code == 0, result.output
        assert stat.S_IMODE(out.stat().st_mode) == mode
    finally:
        os.umask(previous)
