"""The tests need root (namespaces, mounts) and the debug build of both
services; without them they fail, never skip."""

import os
import sys
from pathlib import Path

import pytest

# scripts/, where compose_netns and envvars are.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


@pytest.fixture(autouse=True, scope="session")
def _root() -> None:
    assert os.geteuid() == 0, "compose_netns runs containers in namespaces: run as root (make test does)"
