"""ORL / AT&T faces: 40 people (``s1``..``s40``) x 10 grayscale 92x112 PNG images."""

from __future__ import annotations

from pathlib import Path

from loyalnet.assets import dataset_dir
from store_node.datasets._folders import people_folders

ORL_NAME = "orl"


def orl_people(home: Path | None = None) -> dict[str, list[Path]]:
    """Subject name (``s1``..``s40``) -> its images ``1.png``..``10.png``.

    Subjects and images come in numeric order (``s2`` before ``s10``, ``2.png`` before
    ``10.png``), the same on every run.

    Raises:
        AssetError: when ``data/orl`` is missing under the data home.
    """
    root = dataset_dir(ORL_NAME, home)
    people = people_folders(root, ".png", sort_key=lambda path: _number(path.stem))
    return dict(sorted(people.items(), key=lambda item: _number(item[0].removeprefix("s"))))


def _number(text: str) -> int:
    # A stray non-numeric name sorts first rather than failing the whole listing.
    return int(text) if text.isdigit() else -1
