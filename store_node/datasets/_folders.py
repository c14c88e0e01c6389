"""Listing a data set laid out as one sub-folder of images per person."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def people_folders(
    root: Path,
    suffix: str,
    sort_key: Callable[[Path], int] | None = None,
) -> dict[str, list[Path]]:
    """Map each sub-folder name of ``root`` to its files ending in ``suffix``.

    Folders without any such file are left out. Names and files are sorted (by ``sort_key`` when
    given, else by name) so that every run sees the same order: splits drawn from it with a fixed
    seed are then reproducible.
    """
    people: dict[str, list[Path]] = {}
    for folder in sorted(root.iterdir(), key=lambda p: p.name):
        if not folder.is_dir():
            continue
        files = [p for p in folder.iterdir() if p.is_file() and p.name.endswith(suffix)]
        if files:
            if sort_key is None:
                files.sort(key=lambda p: p.name)
            else:
                files.sort(key=sort_key)
            people[folder.name] = files
    return people
