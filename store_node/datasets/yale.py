"""Extended Yale B (cropped, 168x192 grayscale PNG): 38 people under 64 light directions.

Files are ``yaleBNN/yaleBNN_P00A<+-aaa>E<+-ee>.png``, where ``A`` is the azimuth and ``E`` the
elevation of the light source in degrees, plus one ``yaleBNN_P00_Ambient.png`` per person taken
with ambient light only.
"""

from __future__ import annotations

import re
from pathlib import Path

from loyalnet.assets import dataset_dir
from store_node.datasets._folders import people_folders

YALE_NAME = "croppedyale"
_LIGHT = re.compile(r"_P\d+A(?P<azimuth>[+-]\d{3})E(?P<elevation>[+-]\d{2})\.\w+$")


def yale_people(home: Path | None = None, include_ambient: bool = True) -> dict[str, list[Path]]:
    """Person (``yaleB01``..``yaleB39``, 38 of them: there is no ``yaleB14``) -> image paths.

    Args:
        home: the data home; by default :func:`loyalnet.assets.data_home`.
        include_ambient: keep each person's ambient-light image, which has no light direction
            (:func:`yale_lighting` rejects it).

    Raises:
        AssetError: when ``data/croppedyale`` is missing under the data home.
    """
    people = people_folders(dataset_dir(YALE_NAME, home), ".png")
    if include_ambient:
        return people
    return {
        name: [p for p in paths if _LIGHT.search(p.name)]
        for name, paths in people.items()
        if any(_LIGHT.search(p.name) for p in paths)
    }


def yale_lighting(path: Path | str) -> tuple[int, int]:
    """The light direction of one image, ``(azimuth, elevation)`` in degrees.

    Azimuth runs from -130 to +130 and elevation from -40 to +90, signs as in the file name (the
    database's notes put positive azimuth to the subject's right and positive elevation above the
    horizon); (0, 0) is light from straight ahead.

    Raises:
        ValueError: when the name carries no light direction (e.g. the ``_Ambient`` images).
    """
    match = _LIGHT.search(Path(path).name)
    if match is None:
        raise ValueError(f"no light direction in the file name {Path(path).name!r}")
    return int(match["azimuth"]), int(match["elevation"])
