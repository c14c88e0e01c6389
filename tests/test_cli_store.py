"""The `loyalnet store` commands end to end: real processes, real SQLite, real faces."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image


def loyalnet(
    *args: str, store: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run the real `loyalnet` command in a child process."""
    env = dict(os.environ)
    env.pop("LOYALNET_STORE", None)
    command = [sys.executable, "-m", "loyalnet_cli", *args]
    if store is not None:
        command += ["--store", str(store)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    if check and done.returncode != 0:
        raise AssertionError(f"{command} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def assert_one_line_error(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    message = " ".join(lines)
    assert message.startswith("error:"), done.stderr
    for fragment in fragments:
        assert fragment in message, message


def test_enrol_identify_erase_on_orl(tmp_path: Path, orl_images: Path) -> None:
    store = tmp_path / "store"
    loyalnet("store", "init", "--store-id", "orl-test", store=store)
    assert (store / "store.key").stat().st_mode & 0o777 == 0o600

    for member, person in (("M1", "s1"), ("M2", "s2"), ("M3", "s3")):
        photos = [str(orl_images / person / f"{k}.png") for k in (1, 2, 3, 4)]
        enrolled = json.loads(
            loyalnet(
                "store",
                "enroll",
                "--member",
                member,
                "--consent",
                "recognition",
                "--json",
                *photos,
                store=store,
            ).stdout
        )
        assert enrolled["templates_added"] >= 3
        assert enrolled["crops_stored"] == 0  # no model_improvement consent, no crops

    probes = [str(orl_images / p / "9.png") for p in ("s1", "s2", "s3")]
    identified = json.loads(loyalnet("store", "identify", "--json", *probes, store=store).stdout)
    decisions = [photo["faces"][0]["member"] for photo in identified["photos"]]
    assert decisions == ["M1", "M2", "M3"]

    listed = json.loads(loyalnet("store", "members", "--json", store=store).stdout)
    assert [m["member"] for m in listed] == ["M1", "M2", "M3"]
    assert all(m["purposes"] == ["recognition"] for m in listed)

    receipt = json.loads(loyalnet("store", "erase", "M2", "--yes", "--json", store=store).stdout)
    assert receipt["templates_removed"] >= 3
    after = json.loads(loyalnet("store", "identify", "--json", probes[1], store=store).stdout)
    assert after["photos"][0]["faces"][0]["member"] is None
    listed = json.loads(loyalnet("store", "members", "--json", store=store).stdout)
    assert [m["member"] for m in listed] == ["M1", "M3"]


def test_enrol_lfw_with_model_improvement_and_strangers(tmp_path: Path, lfw_images: Path) -> None:
    store = tmp_path / "store"
    loyalnet("store", "init", store=store)
    person = "Gloria_Macapagal_Arroyo"
    photos = sorted((lfw_images / person).glob("*.jpg"))
    enrolled = json.loads(
        loyalnet(
            "store",
            "enroll",
            "--member",
            "L-1",
            "--name",
            "Gloria",
            "--consent",
            "recognition,model_improvement",
            "--json",
            *map(str, photos[:3]),
            store=store,
        ).stdout
    )
    assert enrolled["templates_added"] == enrolled["crops_stored"] >= 2

    stranger = next(p for p in sorted(lfw_images.iterdir()) if len(list(p.iterdir())) == 1)
    probe_paths = [str(photos[5]), str(next(stranger.iterdir()))]
    identified = json.loads(
        loyalnet("store", "identify", "--largest", "--json", *probe_paths, store=store).stdout
    )
    member_face, stranger_face = (p["faces"][0] for p in identified["photos"])
    assert member_face["member"] == "L-1"
    assert member_face["similarity"] >= identified["threshold"]
    assert stranger_face["member"] is None
    assert stranger_face["similarity"] < identified["threshold"]


def test_enrolment_rejects_bad_photos_one_by_one(
    tmp_path: Path, orl_images: Path, lfw_images: Path
) -> None:
    store = tmp_path / "store"
    loyalnet("store", "init", store=store)
    blank = tmp_path / "wall.png"
    Image.new("RGB", (200, 200), (128, 128, 128)).save(blank)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    pair = tmp_path / "two_people.png"
    left, right = (Image.open(orl_images / s / "1.png").convert("RGB") for s in ("s5", "s6"))
    side_by_side = Image.new("RGB", (left.width + right.width, left.height))
    side_by_side.paste(left, (0, 0))
    side_by_side.paste(right, (left.width, 0))
    side_by_side.save(pair)
    good = orl_images / "s7" / "1.png"

    report = json.loads(
        loyalnet(
            "store",
            "enroll",
            "--member",
            "M7",
            "--consent",
            "recognition",
            "--json",
            str(blank),
            str(broken),
            str(pair),
            str(good),
            store=store,
        ).stdout
    )
    outcome = {Path(p["photo"]).name: p for p in report["photos"]}
    assert outcome["wall.png"]["reason"] == "no face found"
    assert outcome["broken.jpg"]["reason"].startswith("unreadable")
    assert outcome["two_people.png"]["reason"].startswith("2 faces")
    assert outcome["1.png"]["accepted"] is True
    assert report["templates_added"] == 1

    # Nothing usable: refused, and nothing at all is written for that member.
    done = loyalnet(
        "store",
        "enroll",
        "--member",
        "M8",
        "--consent",
        "recognition",
        str(blank),
        store=store,
        check=False,
    )
    assert_one_line_error(done, "no usable photo", "nothing was enrolled")
    members = json.loads(loyalnet("store", "members", "--json", store=store).stdout)
    assert [m["member"] for m in members] == ["M7"]


def test_errors_are_one_line(tmp_path: Path, orl_images: Path) -> None:
    store = tmp_path / "store"
    photo = str(orl_images / "s1" / "1.png")
    assert_one_line_error(
        loyalnet("store", "members", store=store, check=False), "loyalnet store init"
    )

    loyalnet("store", "init", store=store)
    assert_one_line_error(
        loyalnet("store", "init", store=store, check=False), "already holds a store"
    )
    no_recognition = loyalnet(
        "store",
        "enroll",
        "--member",
        "X",
        "--consent",
        "model_improvement",
        photo,
        store=store,
        check=False,
    )
    assert_one_line_error(no_recognition, "recognition")
    unknown_purpose = loyalnet(
        "store",
        "enroll",
        "--member",
        "X",
        "--consent",
        "marketing",
        photo,
        store=store,
        check=False,
    )
    assert_one_line_error(unknown_purpose, "marketing")
    assert_one_line_error(
        loyalnet("store", "erase", "nobody", "--yes", store=store, check=False), "nobody"
    )

    # A wrong key opens nothing and changes nothing.
    before = (store / "gallery.db").read_bytes()
    key = store / "store.key"
    key.write_bytes(os.urandom(len(key.read_bytes())))
    assert_one_line_error(loyalnet("store", "members", store=store, check=False), "key")
    assert (store / "gallery.db").read_bytes() == before

    # A damaged database is named as such.
    (store / "gallery.db").write_bytes(b"\x00garbage" * 512)
    assert_one_line_error(loyalnet("store", "members", store=store, check=False))


@pytest.mark.parametrize(
    "command", [[], ["store"], ["store", "enroll"], ["bench", "lfw"], ["demo", "store"]]
)
def test_help_teaches(command: list[str]) -> None:
    done = loyalnet(*command, "--help")
    assert "Usage" in done.stdout
    assert len(done.stdout.splitlines()) > 5


def test_calibrate_on_a_folder_of_strangers(tmp_path: Path, orl_images: Path) -> None:
    store = tmp_path / "store"
    loyalnet("store", "init", store=store)
    people = tmp_path / "strangers"
    # Eight people, 80 photos: some 2,800 impostor pairs, plenty for a reliable 1% threshold.
    for index in range(20, 28):
        shutil.copytree(orl_images / f"s{index}", people / f"s{index}")
    default = json.loads(
        loyalnet(
            "store", "identify", "--json", str(orl_images / "s1" / "1.png"), store=store
        ).stdout
    )
    calibrated = json.loads(
        loyalnet(
            "store", "calibrate", "--people", str(people), "--fpir", "0.01", "--json", store=store
        ).stdout
    )
    assert calibrated["source"] == str(people)
    assert calibrated["target_fpir"] == 0.01
    assert calibrated["reliable"] is True
    assert -1.0 < calibrated["threshold"] < 1.0
    # An empty gallery has no members to be strangers to each other: the reference alone.
    assert calibrated["camera_adjusted"] is None
    assert (calibrated["members"], calibrated["governed_by"], calibrated["fnir"]) == (
        0,
        "reference",
        None,
    )
    expected = calibrated["expected_fpir"]
    [reference] = expected["rests_on"]
    assert reference["source"] == str(people)
    assert reference["impostor_scores"] > 2500 and reference["per"] == "template"
    low, high = expected["interval"]
    assert low <= expected["estimate"] <= 0.01 <= high
    # The new calibration and target now set the identification threshold.
    after = json.loads(
        loyalnet(
            "store", "identify", "--json", str(orl_images / "s1" / "1.png"), store=store
        ).stdout
    )
    assert after["threshold"] == calibrated["threshold"]
    assert after["threshold"] != default["threshold"]
    assert "target_fpir = 0.01" in (store / "store.toml").read_text()
