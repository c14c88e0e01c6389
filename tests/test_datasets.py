"""The data-set readers against the real shared data."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from loyalnet.assets import AssetError
from store_node.datasets import (
    lfw_pairs,
    lfw_people,
    orl_people,
    yale_lighting,
    yale_people,
)


def test_lfw_people_counts() -> None:
    people = lfw_people()
    assert len(people) == 5749
    assert sum(len(paths) for paths in people.values()) == 13233
    assert list(people) == sorted(people)
    bush = people["George_W_Bush"]
    assert bush[9].name == "George_W_Bush_0010.jpg"
    assert bush == sorted(bush)


def test_lfw_people_min_images() -> None:
    people = lfw_people(min_images=5)
    assert len(people) == 423
    assert sum(len(paths) for paths in people.values()) == 5985
    assert min(len(paths) for paths in people.values()) == 5


def test_lfw_people_is_deterministic() -> None:
    assert lfw_people(min_images=20) == lfw_people(min_images=20)


def test_lfw_pairs_view2() -> None:
    pairs = lfw_pairs()
    assert len(pairs) == 6000
    assert sum(pair.same for pair in pairs) == 3000
    assert Counter(pair.fold for pair in pairs) == dict.fromkeys(range(10), 600)
    assert Counter(pair.fold for pair in pairs if pair.same) == dict.fromkeys(range(10), 300)
    first = pairs[0]
    assert (first.fold, first.same) == (0, True)
    assert first.left.name == "Abel_Pacheco_0001.jpg"
    assert first.right.name == "Abel_Pacheco_0004.jpg"
    different = pairs[300]
    assert not different.same
    assert different.left.parent.name != different.right.parent.name
    assert all(pair.left.parent.name == pair.right.parent.name for pair in pairs if pair.same)


def test_orl_people() -> None:
    people = orl_people()
    assert list(people) == [f"s{i}" for i in range(1, 41)]
    assert all(len(paths) == 10 for paths in people.values())
    assert [p.name for p in people["s1"]] == [f"{i}.png" for i in range(1, 11)]


def test_yale_people() -> None:
    people = yale_people()
    assert len(people) == 38
    assert "yaleB14" not in people
    assert sum(len(paths) for paths in people.values()) == 2452
    directional = yale_people(include_ambient=False)
    assert sum(len(paths) for paths in directional.values()) == 2452 - 38
    for paths in directional.values():
        for path in paths:
            yale_lighting(path)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("yaleB01_P00A+000E+00.png", (0, 0)),
        ("yaleB01_P00A-130E+20.png", (-130, 20)),
        ("yaleB39_P00A+035E-20.png", (35, -20)),
        ("yaleB05_P00A+110E+65.png", (110, 65)),
    ],
)
def test_yale_lighting(name: str, expected: tuple[int, int]) -> None:
    assert yale_lighting(Path("croppedyale") / name[:7] / name) == expected
    assert yale_lighting(name) == expected


def test_yale_lighting_rejects_ambient() -> None:
    with pytest.raises(ValueError, match="Ambient"):
        yale_lighting("yaleB01_P00_Ambient.png")


def test_missing_data_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LOYALTY_DATA_HOME", str(tmp_path))
    for reader in (lfw_people, lfw_pairs, orl_people, yale_people):
        with pytest.raises(AssetError, match="not found"):
            reader()


def test_unset_folder_in_data_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LOYALTY_DATA_HOME", str(tmp_path / "nowhere"))
    with pytest.raises(AssetError, match="not a folder"):
        lfw_people()


def test_malformed_pairs_file(tmp_path: Path) -> None:
    (tmp_path / "data" / "lfw" / "images").mkdir(parents=True)
    (tmp_path / "data" / "lfw" / "pairs.txt").write_text("10\t300\nAbel_Pacheco\t1\t4\n")
    with pytest.raises(AssetError, match="pair lines"):
        lfw_pairs(home=tmp_path)


def test_pairs_naming_missing_images(tmp_path: Path) -> None:
    (tmp_path / "data" / "lfw" / "images").mkdir(parents=True)
    (tmp_path / "data" / "lfw" / "pairs.txt").write_text(
        "2\t1\nA\t1\t2\nA\t1\tB\t1\nC\t1\t2\nC\t1\tD\t3\n"
    )
    with pytest.raises(AssetError, match="missing"):
        lfw_pairs(home=tmp_path)
