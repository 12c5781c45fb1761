"""The CDNOW files as tests read them: through configs/data/cdnow.yaml, the same mapping `data=cdnow` trains on."""

import pytest
from conftest import REPO

from sellerlift.data.cdnow import cdnow_path
from sellerlift.data.files import FileSource

CDNOW_CONFIG = REPO / "configs" / "data" / "cdnow.yaml"


def have_cdnow() -> bool:
    try:
        cdnow_path()
        return True
    except FileNotFoundError:
        return False


needs_cdnow = pytest.mark.skipif(not have_cdnow(), reason="pip install --no-deps lifetimes==0.11.3")


def cdnow_source(**overrides) -> FileSource:
    """The FileSource of configs/data/cdnow.yaml (``which``, ``path``, ``cutoff``, ... as overrides)."""
    return FileSource.from_yaml(CDNOW_CONFIG, **overrides)


def cdnow_events(which: str = "master", path=None):
    return cdnow_source(which=which, path=str(path) if path else None).read_events()
