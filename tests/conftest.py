"""Shared pytest setup: run from the repo root's modules, and Triton's CPU interpreter where there is no GPU."""
import os
import sys

# Must be set before triton is first imported anywhere (kernels.py imports it lazily).
if not os.path.exists("/dev/nvidia0"):
    os.environ.setdefault("TRITON_INTERPRET", "1")

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def fp32_unless_asked():
    """A stage's main() sets model.BF16 (set_precision, --precision auto): every test starts from fp32."""
    import model

    model.BF16 = False
    yield
    model.BF16 = False
