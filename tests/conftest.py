import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data():
    """Folder of real detector files (../shared/data next to the checkout)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (it sits beside the checkout as ../shared/data)")
    return SHARED_DATA


def shared_file(name):
    p = SHARED_DATA / name
    if not p.exists():
        pytest.skip(f"real data file {p} is absent")
    return p
