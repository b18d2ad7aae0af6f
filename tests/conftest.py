import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny_model import build_tiny_gguf  # noqa: E402

THREADS = 1  # the test machines have 2 cores: never oversubscribe


@pytest.fixture(scope="session", autouse=True)
def prediction_records_in_tmp(tmp_path_factory):
    """Each tiny model a test builds gets its decision-token prediction timed once (engines/llama/prediction.py):
    those records go to a temporary directory, not the user's cache."""
    from refusal_edge.engines.llama import prediction

    records = tmp_path_factory.mktemp("prediction-records")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(prediction, "record_dir", lambda: records)
        yield


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory) -> Path:
    return build_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny.gguf")


@pytest.fixture(scope="session")
def tiny_model(tiny_gguf):
    from refusal_edge import RefusalModel

    model = RefusalModel.load(tiny_gguf, n_ctx=256, n_threads=THREADS)
    yield model
    model.close()


@pytest.fixture(scope="module")
def app_client(tiny_gguf):
    """The server app in process (Starlette's TestClient), one slot, answers of at most 4 tokens; a 500 is a
    response here, not an exception, so that tests can assert there is none."""
    testclient = pytest.importorskip("starlette.testclient")
    from refusal_edge import RefusalModel
    from refusal_edge.server.app import ServerSettings, create_app
    from refusal_edge.server.requests import Limits
    from refusal_edge.server.slots import SlotPool

    model = RefusalModel.load(tiny_gguf, n_ctx=256, n_threads=THREADS)
    settings = ServerSettings(model_id="tiny", policy=model.default_policy, limits=Limits(max_tokens=4))
    with testclient.TestClient(create_app(SlotPool([model]), settings), raise_server_exceptions=False) as client:
        yield client
    model.close()
