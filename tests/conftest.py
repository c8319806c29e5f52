"""Shared test settings."""

import os

import pytest


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
