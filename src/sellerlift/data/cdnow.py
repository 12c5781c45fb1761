"""Where the real CDNOW transactions are; reading them is a mapping config, not code.

CDNOW: 23,570 customers who made their first purchase at the CDNOW online music
store in 1997-Q1, followed to the end of June 1998 (Fader & Hardie). The files ship
inside the ``Lifetimes`` wheel on PyPI; we find them with ``importlib.metadata`` and
never import ``lifetimes`` (its code breaks on pandas 3). Install it with
``pip install --no-deps lifetimes==0.11.3``.

``configs/data/cdnow.yaml`` maps them onto the events contract with the generic
:class:`sellerlift.data.files.FileSource` (whitespace-separated, ``YYYYMMDD`` dates,
every row one purchase): ``path: package://lifetimes/CDNOW_master.txt``.
"""

from __future__ import annotations

from pathlib import Path

from sellerlift.data.mapping import INSTALL_HINTS, packaged_file

INSTALL_HINT = INSTALL_HINTS["lifetimes"]
FILES = {"master": "CDNOW_master.txt", "sample": "CDNOW_sample.txt"}


def cdnow_path(which: str = "master") -> Path:
    """Path of a CDNOW file inside the installed ``lifetimes`` distribution.

    ``which="master"`` is the full 23,570-customer file; ``"sample"`` is the 1/10 sample
    (2,357 customers) that Fader, Hardie & Lee (2005) fitted.
    """
    if which not in FILES:
        raise ValueError(f"which={which!r}: expected one of {list(FILES)}")
    return packaged_file("lifetimes", FILES[which])
