"""Shared test settings."""

import os

# As `avar watch` and `avar bench` do: idle OpenMP workers must not spin on the cores the
# decoder threads need (the live-source tests check pacing).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _private_avar_cache(tmp_path_factory):
    """ONNX exports and the bench clip go to a temporary cache, never the user's."""
    old = os.environ.get("AVAR_CACHE")
    os.environ["AVAR_CACHE"] = str(tmp_path_factory.mktemp("avar-cache"))
    yield
    if old is None:
        os.environ.pop("AVAR_CACHE", None)
    else:
        os.environ["AVAR_CACHE"] = old


@pytest.fixture
def one_torch_thread():
    """Run a test on one torch thread (small models: threads only add overhead), then restore."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
