"""The gallery's training support: class weights sealed, erased without trace, following consent;
training examples gated by consent; the recognition model switch.

SYNTHETIC data, as in ``test_gallery.py``: random unit vectors and random uint8 "crops" stand in
for the face pipeline's output; the gallery never looks inside them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from synthetic import random_crops, unit_vectors

from store_node.gallery import Gallery, TamperedDataError
from store_node.gallery.class_weights import load_class_weights, save_class_weights
from store_node.gallery.recognition_model import (
    RecognitionModel,
    recognition_model,
    switch_recognition_model,
)
from store_node.gallery.training_data import training_examples

MODEL = "mobilefacenet-ms1m-90a00ba1"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def traces(needle: bytes, files: dict[str, bytes], width: int = 32) -> list[str]:
    """Files holding any ``width``-byte piece of ``needle`` (catches partly wiped copies too)."""
    pieces = [needle[i : i + width] for i in range(0, max(1, len(needle) - width + 1), width)]
    return [name for name, data in files.items() if any(piece in data for piece in pieces)]


def raw_rows(db: Path, sql: str, *args: object) -> list[tuple[Any, ...]]:
    connection = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return list(connection.execute(sql, args))
    finally:
        connection.close()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20260302)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    folder = tmp_path / "store"
    folder.mkdir()
    return folder


@pytest.fixture
def gallery(store: Path) -> Iterator[Gallery]:
    with Gallery.create(store / "gallery.db", store / "store.key") as opened:
        yield opened


def enrol(
    gallery: Gallery,
    rng: np.random.Generator,
    member_id: str,
    purposes: str = "recognition,model_improvement",
    count: int = 2,
    now: datetime = T0,
    retention_days: int = 365,
) -> None:
    gallery.add_member(member_id, f"name of {member_id}")
    gallery.record_consent(member_id, purposes, "2026-11", retention_days, now=now)
    gallery.add_templates(
        member_id, unit_vectors(rng, count), MODEL, random_crops(rng, count), now=now
    )


def test_class_weights_are_sealed_and_kept_only_for_members_with_crops(
    gallery: Gallery, store: Path, rng: np.random.Generator
) -> None:
    enrol(gallery, rng, "M1")
    enrol(gallery, rng, "M2", purposes="recognition")  # no crops kept
    rows = dict(zip(("M1", "M2"), unit_vectors(rng, 2), strict=True))

    assert save_class_weights(gallery, rows) == 1
    loaded = load_class_weights(gallery, ["M1", "M2"])
    assert list(loaded) == ["M1"]
    np.testing.assert_allclose(loaded["M1"], rows["M1"], atol=1e-7)
    assert load_class_weights(gallery, ["M2"]) == {}
    sealed = raw_rows(store / "gallery.db", "SELECT length(sealed_weight) FROM class_weights")
    assert sealed == [(512 + 28,)]
    assert traces(rows["M1"].astype("<f4").tobytes(), folder_bytes(store)) == []


def test_a_class_weight_moved_to_another_member_fails_loudly(
    gallery: Gallery, rng: np.random.Generator
) -> None:
    enrol(gallery, rng, "M1")
    enrol(gallery, rng, "M2")
    save_class_weights(gallery, dict(zip(("M1", "M2"), unit_vectors(rng, 2), strict=True)))
    connection = sqlite3.connect(gallery.db_path)
    with connection:
        connection.execute("DELETE FROM class_weights WHERE member_id = 'M2'")
        connection.execute("UPDATE class_weights SET member_id = 'M2' WHERE member_id = 'M1'")
    connection.close()
    with pytest.raises(TamperedDataError, match="class weight of member M2"):
        load_class_weights(gallery, ["M2"])


def test_erasure_removes_the_class_weight_without_trace(
    store: Path, rng: np.random.Generator
) -> None:
    db = store / "gallery.db"
    with Gallery.create(db, store / "store.key") as gallery:
        enrol(gallery, rng, "ERASE-ME-0042", count=3)
        enrol(gallery, rng, "KEEP-ME-0001")
        rows = dict(zip(("ERASE-ME-0042", "KEEP-ME-0001"), unit_vectors(rng, 2), strict=True))
        save_class_weights(gallery, rows)
        sealed = {
            member: bytes(blob)
            for member, blob in raw_rows(db, "SELECT member_id, sealed_weight FROM class_weights")
        }
        assert all(traces(blob, folder_bytes(store)) for blob in sealed.values())

        gallery.erase("ERASE-ME-0042", now=T0 + timedelta(days=1))
        assert list(load_class_weights(gallery, rows)) == ["KEEP-ME-0001"]
        while_open = folder_bytes(store)
    after_close = folder_bytes(store)

    for files in (while_open, after_close):
        assert traces(sealed["ERASE-ME-0042"], files) == [], "an erased class weight survives"
        assert traces(rows["ERASE-ME-0042"].astype("<f4").tobytes(), files) == []
        assert traces(sealed["KEEP-ME-0001"], files)  # the other member's row is intact
    assert raw_rows(db, "SELECT member_id FROM class_weights") == [("KEEP-ME-0001",)]


def test_withdrawing_model_improvement_removes_the_class_weight_too(
    store: Path, gallery: Gallery, rng: np.random.Generator
) -> None:
    enrol(gallery, rng, "M1")
    save_class_weights(gallery, {"M1": unit_vectors(rng, 1)[0]})
    sealed = bytes(raw_rows(store / "gallery.db", "SELECT sealed_weight FROM class_weights")[0][0])

    gallery.record_consent("M1", "recognition", "2026-11", now=T0 + timedelta(days=1))

    assert load_class_weights(gallery, ["M1"]) == {}
    assert traces(sealed, folder_bytes(store)) == []
    assert training_examples(gallery, now=T0 + timedelta(days=2)).member_ids == []


def test_training_examples_follow_the_consent_in_force(
    gallery: Gallery, rng: np.random.Generator
) -> None:
    enrol(gallery, rng, "LONG", count=3)
    enrol(gallery, rng, "SHORT", count=2, retention_days=10)
    enrol(gallery, rng, "RECOGNITION-ONLY", purposes="recognition")

    during = training_examples(gallery, now=T0 + timedelta(days=5))
    assert during.member_ids == ["LONG", "SHORT"]
    assert during.labels.tolist() == [0, 0, 0, 1, 1]
    assert during.crops.dtype == np.uint8 and during.crops.shape == (5, 112, 112, 3)

    after = training_examples(gallery, now=T0 + timedelta(days=20))
    assert after.member_ids == ["LONG"] and after.examples == 3


def test_switching_models_keeps_one_previous_generation(
    gallery: Gallery, rng: np.random.Generator
) -> None:
    enrol(gallery, rng, "WITH-CROPS")
    enrol(gallery, rng, "NO-CROPS", purposes="recognition")
    assert recognition_model(gallery) is None

    def switch(version: str, previous: str) -> tuple[int, int]:
        record = RecognitionModel(version, f"models/{version}.pt", "ab" * 32, T0, previous)
        # NO-CROPS is offered templates too, but has no crops they could come from.
        templates = {"WITH-CROPS": unit_vectors(rng, 2), "NO-CROPS": unit_vectors(rng, 2)}
        counts = switch_recognition_model(gallery, record, templates, now=T0)
        assert counts.members == ("WITH-CROPS",)
        assert recognition_model(gallery) == record
        return counts.templates_added, counts.templates_removed

    assert switch("v1", MODEL) == (2, 0)
    assert switch("v2", "v1") == (2, 2)  # the MODEL templates go, v1 stays
    versions = {m.member_id: m.model_versions for m in gallery.members()}
    assert versions == {"NO-CROPS": (MODEL,), "WITH-CROPS": ("v1", "v2")}
