# The Triton interpreter must be switched on before any kernel is defined, i.e.
# before fastdiffc.kernels' submodules are imported anywhere in the test session.
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
