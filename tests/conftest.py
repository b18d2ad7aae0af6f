import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny_model import build_tiny_gguf  # noqa: E402

THREADS = 1  # the test machines have 2 cores: never oversubscribe


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory) -> Path:
    return build_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny.gguf")


@pytest.fixture(scope="session")
def tiny_model(tiny_gguf):
    from refusal_edge import RefusalModel

    model = RefusalModel.load(tiny_gguf, n_ctx=256, n_threads=THREADS)
    yield model
    model.close()
