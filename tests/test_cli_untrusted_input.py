"""The `loyalnet store` commands on hostile input: markup in ids and names, and bad photos.

Ids, names, tiers and paths come from staff, members and cameras; they are printed as typed,
never read as rich markup. A photo that cannot be read (a decompression bomb, a truncated or
empty file, a folder, text) is refused on its own; the other photos of the same call are still
answered. Real processes, as in test_cli_store.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from crafted_images import png_claiming, upscaled_jpeg

PERSON = "Gloria_Macapagal_Arroyo"


def loyalnet(*args: str, store: Path) -> subprocess.CompletedProcess[str]:
    """Run the real `loyalnet` command; a wide terminal so that no cell is cut short."""
    env = dict(os.environ, COLUMNS="400")
    env.pop("LOYALNET_STORE", None)
    env.pop("LOYALNET_DEBUG", None)
    command = [sys.executable, "-m", "loyalnet_cli", *args, "--store", str(store)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert "Traceback" not in done.stderr, done.stderr
    assert "internal error" not in done.stderr, done.stderr
    return done


def _photos(lfw_images: Path) -> list[Path]:
    return sorted((lfw_images / PERSON).glob("*.jpg"))


def test_markup_in_ids_names_tiers_and_paths_is_shown_as_typed(
    tmp_path: Path, lfw_images: Path
) -> None:
    store = tmp_path / "[bold]store"
    member, name, tier = "M[/oops]", "[bold]x[/bold] :smile:", "[link=http://x]y"
    folder = tmp_path / "[link=x]photos"
    folder.mkdir()
    photos = [
        shutil.copy(p, folder / f"[bold]face{i}.jpg") for i, p in enumerate(_photos(lfw_images)[:3])
    ]

    # Refused (store ids are restricted), and the refusal quotes it as typed.
    refused = loyalnet("store", "init", "--store-id", "[bold]shop[/bold]", store=store)
    assert refused.returncode == 1
    assert refused.stderr.startswith("error:") and "[bold]shop[/bold]" in refused.stderr
    created = loyalnet("store", "init", "--store-id", "shop-1", store=store)
    assert created.returncode == 0 and f"created in {store}" in created.stdout

    enrolled = loyalnet(
        "store", "enroll", "--member", member, "--name", name, "--tier", tier,
        "--consent", "recognition", str(photos[0]), str(photos[1]), store=store,
    )  # fmt: skip
    assert enrolled.returncode == 0, enrolled.stderr
    assert f"member {member} enrolled" in enrolled.stdout
    assert f"{photos[0]}: accepted" in enrolled.stdout

    listed = loyalnet("store", "members", store=store)
    assert listed.returncode == 0, listed.stderr
    for text in (member, name, tier):
        assert text in listed.stdout, listed.stdout

    identified = loyalnet("store", "identify", str(photos[2]), store=store)
    assert identified.returncode == 0, identified.stderr
    row = next(line for line in identified.stdout.splitlines() if str(photos[2]) in line)
    assert member in row

    missing = loyalnet("store", "erase", "[/nobody]", "--yes", store=store)
    assert missing.returncode == 1
    assert missing.stderr.strip().startswith("error:") and "[/nobody]" in missing.stderr

    erased = loyalnet("store", "erase", member, "--yes", store=store)
    assert erased.returncode == 0, erased.stderr
    assert f"member {member} erased" in erased.stdout


def test_bad_photos_are_refused_one_by_one_and_the_good_ones_answered(
    tmp_path: Path, lfw_images: Path
) -> None:
    store = tmp_path / "store"
    photos = _photos(lfw_images)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_claiming(50_000, 50_000))
    huge = tmp_path / "huge.png"
    huge.write_bytes(png_claiming(10_000, 10_000))
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(photos[4].read_bytes()[:2000])
    empty = tmp_path / "empty.jpg"
    empty.touch()
    folder = tmp_path / "folder.jpg"
    folder.mkdir()
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    big = upscaled_jpeg(tmp_path / "big.jpg", photos[6], 6000)
    bad = [bomb, huge, truncated, empty, folder, text]

    assert loyalnet("store", "init", store=store).returncode == 0
    enrolled = loyalnet(
        "store", "enroll", "--member", "L-1", "--consent", "recognition", "--json",
        str(photos[0]), str(bomb), str(truncated), str(photos[1]), store=store,
    )  # fmt: skip
    assert enrolled.returncode == 0, enrolled.stderr
    report = json.loads(enrolled.stdout)
    assert report["templates_added"] == 2
    reasons = {Path(p["photo"]).name: p["reason"] for p in report["photos"]}
    assert reasons["bomb.png"].startswith("unreadable") and "megapixel" in reasons["bomb.png"]
    assert reasons["truncated.jpg"].startswith("unreadable")

    # One call: every bad photo reported on its own line, the good ones still identified; as
    # for any unreadable photo, the exit code is 1.
    probes = [photos[5], *bad, big]
    done = loyalnet("store", "identify", "--json", *map(str, probes), store=store)
    assert done.returncode == 1, done.stderr
    answers = {Path(p["photo"]).name: p for p in json.loads(done.stdout)["photos"]}
    assert len(answers) == len(probes)
    for good in (photos[5], big):
        assert answers[good.name]["error"] is None
        assert [face["member"] for face in answers[good.name]["faces"]] == ["L-1"]
    # The box is in the 6000-pixel photo's own coordinates.
    x1, y1, x2, y2 = answers["big.jpg"]["faces"][0]["box"]
    assert 1000 < x2 - x1 < 6000 and 1000 < y2 - y1 < 6000 and max(x2, y2) <= 6000
    for path in bad:
        assert answers[path.name]["faces"] == [] and answers[path.name]["error"], path
    assert "megapixel" in answers["bomb.png"]["error"]
    assert "10000x10000 pixels" in answers["huge.png"]["error"]
    assert "folder" in answers["folder.jpg"]["error"]

    table = loyalnet("store", "identify", str(photos[5]), str(bomb), str(folder), store=store)
    assert table.returncode == 1
    assert "L-1" in table.stdout and "megapixel" in table.stdout
