"""The member gallery: sealed storage, consent, 1:N search, erasure without trace, calibration.

Every test works on real SQLite files and real key files under ``tmp_path``.

The embeddings here are SYNTHETIC: random unit vectors (and random uint8 "crops") stand in for
the face embedder's output, because turning photos into embeddings is another module's job and
its tests. The gallery only sees (K, 128) unit float32 vectors and (K, 112, 112, 3) uint8 crops,
whatever produced them.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sqlite3
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from synthetic import random_crops, unit_vectors

from store_node.gallery import (
    AuditAction,
    ConsentError,
    DamagedGalleryError,
    Gallery,
    GalleryError,
    GalleryExistsError,
    GalleryNotFoundError,
    ImpostorScores,
    KeyFileError,
    Purpose,
    PurposeError,
    StoreKey,
    TamperedDataError,
    UnknownMemberError,
    WrongKeyError,
    impostor_scores_from_embeddings,
    parse_purposes,
    threshold_for_fpir,
)
from store_node.gallery import calibration as calibration_module

MODEL = "mobilefacenet-ms1m-90a00ba1"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


# -- helpers -----------------------------------------------------------------------------------


def orthogonal_to(rng: np.random.Generator, rows: NDArray[np.float32]) -> NDArray[np.float32]:
    """A unit vector orthogonal to every row: cosine 0 with every enrolled template."""
    basis, _ = np.linalg.qr(rows.T.astype(np.float64))
    probe = rng.normal(size=128)
    probe -= basis @ (basis.T @ probe)
    return (probe / np.linalg.norm(probe)).astype(np.float32)[None, :]


def folder_bytes(folder: Path) -> dict[str, bytes]:
    """Every file of ``folder`` (db, -wal, -shm, -journal, key), by name."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def traces(needle: bytes, files: dict[str, bytes], width: int = 32) -> list[str]:
    """Files holding any ``width``-byte piece of ``needle`` (catches partly wiped copies too)."""
    pieces = [needle[i : i + width] for i in range(0, max(1, len(needle) - width + 1), width)]
    return [name for name, data in files.items() if any(piece in data for piece in pieces)]


def raw_rows(db: Path, sql: str, *args: object) -> list[tuple[Any, ...]]:
    """Rows read with plain sqlite3, read-only, bypassing the gallery."""
    connection = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return list(connection.execute(sql, args))
    finally:
        connection.close()


def raw_blobs(db: Path, sql: str, *args: object) -> list[bytes]:
    """The first column of each row, as bytes."""
    return [bytes(row[0]) for row in raw_rows(db, sql, *args)]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20260301)


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
    member_id: str,
    embeddings: NDArray[np.float32],
    purposes: str = "recognition",
    crops: NDArray[np.uint8] | None = None,
    now: datetime = T0,
    retention_days: int = 365,
) -> None:
    gallery.add_member(member_id, f"name of {member_id}", "gold")
    gallery.record_consent(member_id, purposes, "2026-11", retention_days, now=now)
    gallery.add_templates(member_id, embeddings, MODEL, crops, now=now)


# -- the key file ------------------------------------------------------------------------------


def test_key_file_is_0600_and_an_exposed_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store.key"
    key = StoreKey.create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_bytes()) == 32
    assert path.read_bytes().hex() not in repr(key)
    assert StoreKey.load(path).open(key.seal(b"x", b"ad"), b"ad") == b"x"

    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        StoreKey.load(path)


def test_key_file_errors_are_clear(tmp_path: Path) -> None:
    path = tmp_path / "store.key"
    with pytest.raises(KeyFileError, match="no store key"):
        StoreKey.load(path)
    StoreKey.create(path)
    original = path.read_bytes()
    with pytest.raises(KeyFileError, match="already exists"):
        StoreKey.create(path)
    assert path.read_bytes() == original
    assert [p.name for p in tmp_path.iterdir()] == ["store.key"]  # no temporary left behind

    path.write_bytes(b"short")
    with pytest.raises(KeyFileError, match="32"):
        StoreKey.load(path)


def test_sealed_values_are_bound_to_their_associated_data(tmp_path: Path) -> None:
    key = StoreKey.create(tmp_path / "store.key")
    sealed = key.seal(b"embedding bytes", b"member A")
    assert len(sealed) == len(b"embedding bytes") + 28
    assert key.seal(b"embedding bytes", b"member A") != sealed  # fresh nonce each time
    with pytest.raises(TamperedDataError):
        key.open(sealed, b"member B")
    flipped = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(TamperedDataError):
        key.open(flipped, b"member A")


# -- opening and creating ----------------------------------------------------------------------


def test_create_refuses_existing_files(store: Path) -> None:
    Gallery.create(store / "gallery.db", store / "store.key").close()
    with pytest.raises(GalleryExistsError):
        Gallery.create(store / "gallery.db", store / "other.key")
    with pytest.raises(GalleryExistsError):
        Gallery.create(store / "other.db", store / "store.key")
    assert sorted(p.name for p in store.iterdir()) == ["gallery.db", "store.key"]
    assert stat.S_IMODE((store / "gallery.db").stat().st_mode) == 0o600


def test_open_without_a_gallery_says_to_init(store: Path) -> None:
    with pytest.raises(GalleryNotFoundError, match="loyalnet store init"):
        Gallery.open(store / "gallery.db", store / "store.key")
    assert list(store.iterdir()) == []  # opening never creates a database


def test_wrong_key_is_refused_and_changes_nothing(store: Path, rng: np.random.Generator) -> None:
    db, key = store / "gallery.db", store / "store.key"
    with Gallery.create(db, key) as gallery:
        enrol(gallery, "M1", unit_vectors(rng, 2))
    before = sha256(db)
    StoreKey.create(store / "wrong.key")

    with pytest.raises(WrongKeyError, match="does not unlock"):
        Gallery.open(db, store / "wrong.key")

    assert sha256(db) == before
    assert sorted(p.name for p in store.iterdir()) == ["gallery.db", "store.key", "wrong.key"]
    with Gallery.open(db, key) as gallery:
        assert [m.member_id for m in gallery.members()] == ["M1"]


@pytest.mark.parametrize("damage", ["random bytes", "truncated", "garbage", "empty", "other db"])
def test_damaged_database_is_named(store: Path, damage: str, rng: np.random.Generator) -> None:
    db, key = store / "gallery.db", store / "store.key"
    with Gallery.create(db, key) as gallery:
        enrol(gallery, "M1", unit_vectors(rng, 3))
    intact = db.read_bytes()
    if damage == "random bytes":
        db.write_bytes(os.urandom(len(intact)))
    elif damage == "truncated":
        db.write_bytes(intact[: len(intact) // 2])
    elif damage == "garbage":
        db.write_bytes(b"\x00garbage" * 512)
    elif damage == "empty":
        db.write_bytes(b"")
    else:
        db.unlink()
        sqlite3.connect(db).execute("CREATE TABLE t (x)").connection.close()

    with pytest.raises(DamagedGalleryError, match="restore it from backup") as raised:
        Gallery.open(db, key)
    assert isinstance(raised.value, GalleryError)
    assert "\n" not in str(raised.value)


def test_a_closed_gallery_says_so(gallery: Gallery) -> None:
    gallery.close()
    with pytest.raises(GalleryError, match="closed"):
        gallery.members()


# -- consent and enrolment ---------------------------------------------------------------------


def test_parse_purposes() -> None:
    assert parse_purposes(" recognition , Model_Improvement") == {
        Purpose.RECOGNITION,
        Purpose.MODEL_IMPROVEMENT,
    }
    with pytest.raises(PurposeError, match=r"marketing.*recognition, model_improvement"):
        parse_purposes("recognition,marketing")
    with pytest.raises(PurposeError, match="no consent purpose"):
        parse_purposes(" , ")


def test_enrolment_without_consent_is_refused(gallery: Gallery, rng: np.random.Generator) -> None:
    with pytest.raises(UnknownMemberError, match="M1"):
        gallery.record_consent("M1", "recognition", "2026-11")
    gallery.add_member("M1", "Mia", None)
    with pytest.raises(ConsentError, match="recognition"):
        gallery.add_templates("M1", unit_vectors(rng, 2), MODEL)

    gallery.record_consent("M1", "model_improvement", "2026-11")
    with pytest.raises(ConsentError, match="recognition"):
        gallery.add_templates("M1", unit_vectors(rng, 2), MODEL, random_crops(rng, 2))
    assert gallery.template_count(MODEL) == 0
    assert gallery.members()[0].crops == 0


def test_recognition_only_consent_stores_templates_but_no_crops(
    gallery: Gallery, rng: np.random.Generator
) -> None:
    gallery.add_member("M1", "Mia", "silver")
    consent = gallery.record_consent("M1", [Purpose.RECOGNITION], "2026-11", now=T0)
    assert consent.expires_at - consent.granted_at == timedelta(days=365)
    result = gallery.add_templates("M1", unit_vectors(rng, 3), MODEL, random_crops(rng, 3), now=T0)

    assert (result.templates_added, result.crops_stored) == (3, 0)
    assert raw_rows(gallery.db_path, "SELECT count(*) FROM enrolment_crops") == [(0,)]
    (summary,) = gallery.members(now=T0)
    assert (summary.templates, summary.crops, summary.model_versions) == (3, 0, (MODEL,))
    assert summary.purposes == {Purpose.RECOGNITION}


def test_model_improvement_consent_stores_crops_until_withdrawn(
    gallery: Gallery, rng: np.random.Generator
) -> None:
    crops = random_crops(rng, 2)
    enrol(gallery, "M1", unit_vectors(rng, 2), "recognition,model_improvement", crops)
    assert gallery.members(now=T0)[0].crops == 2
    sealed = raw_blobs(gallery.db_path, "SELECT sealed_crop FROM enrolment_crops")
    assert len(sealed) == 2 and all(len(blob) == 112 * 112 * 3 + 28 for blob in sealed)
    assert all(traces(crop.tobytes(), {"crops": b"".join(sealed)}) == [] for crop in crops)

    # A newer consent without model improvement governs: the crops go at once.
    later = T0 + timedelta(days=1)
    gallery.record_consent("M1", "recognition", "2026-11", now=later)
    assert gallery.members(now=later)[0].crops == 0
    consent = gallery.consent_of("M1", now=later)
    assert consent is not None and consent.purposes == {Purpose.RECOGNITION}
    assert gallery.audit_log()[-1].details["crops_removed"] == 2


# -- identification ----------------------------------------------------------------------------


def test_identify_finds_the_member_and_rejects_a_stranger(
    gallery: Gallery, rng: np.random.Generator
) -> None:
    people = {f"M{i}": unit_vectors(rng, 3) for i in range(4)}
    for member, vectors in people.items():
        enrol(gallery, member, vectors)
    assert gallery.template_count(MODEL, now=T0) == 12

    noisy = people["M2"][1] + 0.02 * unit_vectors(rng, 1)[0]
    stranger = orthogonal_to(rng, np.concatenate(list(people.values())))
    found, unknown = gallery.identify(np.stack([noisy, stranger[0]]), MODEL, 0.5, now=T0)

    assert found.member_id == "M2" and found.candidate_id == "M2"
    assert 0.95 < found.similarity <= 1.0 and found.threshold == 0.5
    assert unknown.member_id is None
    assert unknown.candidate_id in people
    assert abs(unknown.similarity) < 1e-4
    assert gallery.identify(noisy[None, :], "another-model", 0.5, now=T0)[0].candidate_id == ""
    assert gallery.identify(np.empty((0, 128), np.float32), MODEL, 0.5) == []


def test_expired_consent_is_not_matched(gallery: Gallery, rng: np.random.Generator) -> None:
    vectors = unit_vectors(rng, 2)
    enrol(gallery, "M1", vectors, retention_days=30)
    assert gallery.identify(vectors[:1], MODEL, 0.5, now=T0)[0].member_id == "M1"

    after = T0 + timedelta(days=31)
    (match,) = gallery.identify(vectors[:1], MODEL, 0.5, now=after)
    assert (match.member_id, match.candidate_id) == (None, "")
    assert gallery.template_count(MODEL, now=after) == 0
    assert gallery.consent_of("M1", now=after) is None
    assert gallery.members(now=after)[0].purposes == frozenset()
    with pytest.raises(ConsentError):
        gallery.add_templates("M1", vectors, MODEL, now=after)


# -- sealing at rest ---------------------------------------------------------------------------


def test_templates_are_sealed_at_rest(store: Path, rng: np.random.Generator) -> None:
    vectors = unit_vectors(rng, 4)
    with Gallery.create(store / "gallery.db", store / "store.key") as gallery:
        enrol(gallery, "M1", vectors)
        while_open = folder_bytes(store)
    after_close = folder_bytes(store)

    for files in (while_open, after_close):
        for vector in vectors:
            plaintext = vector.astype("<f4").tobytes()
            assert traces(plaintext, files) == []
    sealed = raw_blobs(store / "gallery.db", "SELECT sealed_embedding FROM templates")
    assert len(sealed) == 4 and all(len(blob) == 512 + 28 for blob in sealed)


def test_a_template_moved_to_another_member_fails_loudly(
    gallery: Gallery, rng: np.random.Generator
) -> None:
    enrol(gallery, "M1", unit_vectors(rng, 2))
    enrol(gallery, "M2", unit_vectors(rng, 2))
    connection = sqlite3.connect(gallery.db_path)
    with connection:
        connection.execute(
            "UPDATE templates SET member_id = 'M2' WHERE id = "
            "(SELECT min(id) FROM templates WHERE member_id = 'M1')"
        )
    connection.close()

    with pytest.raises(TamperedDataError, match="integrity check"):
        gallery.identify(unit_vectors(rng, 1), MODEL, 0.5, now=T0)


# -- erasure -----------------------------------------------------------------------------------


def test_erase_removes_every_trace(store: Path, rng: np.random.Generator) -> None:
    db = store / "gallery.db"
    erased_id, erased_name = "ERASE-ME-0042", "Erin Erasable"
    vectors, crops = unit_vectors(rng, 3), random_crops(rng, 3)
    with Gallery.create(db, store / "store.key") as gallery:
        gallery.add_member(erased_id, erased_name, "gold")
        gallery.record_consent(erased_id, "recognition,model_improvement", "2026-11", now=T0)
        gallery.add_templates(erased_id, vectors, MODEL, crops, now=T0)
        gallery.add_templates(erased_id, unit_vectors(rng, 2), "older-model", now=T0)
        enrol(
            gallery,
            "KEEP-ME-0001",
            unit_vectors(rng, 2),
            "recognition,model_improvement",
            random_crops(rng, 2),
        )

        def sealed_of(member: str) -> list[bytes]:
            return raw_blobs(
                db, "SELECT sealed_embedding FROM templates WHERE member_id = ?", member
            ) + raw_blobs(db, "SELECT sealed_crop FROM enrolment_crops WHERE member_id = ?", member)

        erased_blobs, kept_blobs = sealed_of(erased_id), sealed_of("KEEP-ME-0001")
        assert len(erased_blobs) == 3 + 2 + 3
        # The search works: before erasure every sealed value is found in the folder's files.
        before = folder_bytes(store)
        assert all(traces(blob, before) for blob in erased_blobs)

        receipt = gallery.erase(erased_id, now=T0 + timedelta(days=2))
        assert (receipt.templates_removed, receipt.crops_removed, receipt.consents_removed) == (
            5,
            3,
            1,
        )
        assert gallery.was_erased(erased_id) and not gallery.was_erased("KEEP-ME-0001")
        assert [m.member_id for m in gallery.members()] == ["KEEP-ME-0001"]
        assert erased_id not in receipt.member_ref
        with pytest.raises(UnknownMemberError, match=erased_id):
            gallery.erase(erased_id)

        log = gallery.audit_log()
        entry = log[-1]
        assert (entry.action, entry.receipt_id, entry.member_ref) == (
            AuditAction.ERASE,
            receipt.receipt_id,
            receipt.member_ref,
        )
        assert dict(entry.details) == {
            "templates_removed": 5,
            "crops_removed": 3,
            "consents_removed": 1,
        }
        details = json.dumps([dict(e.details) for e in log])
        assert erased_id not in details and erased_name not in details
        while_open = folder_bytes(store)
    after_close = folder_bytes(store)

    for files in (while_open, after_close):
        for blob in erased_blobs:
            assert traces(blob, files) == [], "an erased sealed value survives"
        for crop in crops:
            assert traces(crop.tobytes(), files) == []
        for vector in vectors:
            assert traces(vector.astype("<f4").tobytes(), files) == []
        for text in (erased_id, erased_name):
            assert not [name for name, data in files.items() if text.encode() in data]
        assert all(traces(blob, files) for blob in kept_blobs)  # the others are intact
    wal = store / "gallery.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0


def test_erasing_an_unknown_member_is_a_clear_error(gallery: Gallery) -> None:
    with pytest.raises(UnknownMemberError, match="no member nobody"):
        gallery.erase("nobody")
    assert gallery.audit_log() == []


# -- calibration -------------------------------------------------------------------------------


def test_threshold_matches_a_hand_computed_quantile() -> None:
    # 100 impostor scores 0.01, 0.02, ..., 1.00. FPIR 5% against one template allows 5 of the
    # 100 pairs above the threshold: the 6th highest score, 0.95.
    sample = ImpostorScores.from_scores(np.arange(1, 101) / 100, MODEL, "hand")
    threshold = threshold_for_fpir(sample, 0.05, 1)
    assert threshold.value == pytest.approx(0.95)
    assert threshold.far_per_comparison == pytest.approx(0.05)
    assert threshold.reliable and threshold.note == ""
    # Against 2 templates the same per-comparison FAR needs FPIR = 1 - 0.95**2.
    assert threshold_for_fpir(sample, 1 - 0.95**2, 2).value == pytest.approx(0.95)

    # FAR 1e-5 < 1/100 pairs: clamped to the highest score seen, and flagged.
    clamped = threshold_for_fpir(sample, 0.001, 100)
    assert clamped.value == pytest.approx(1.0)
    assert not clamped.reliable and "more people" in clamped.note


def test_threshold_is_the_empirical_quantile(rng: np.random.Generator) -> None:
    raw = rng.normal(0.0, 0.1, size=1500).astype(np.float32)
    exact = ImpostorScores.from_scores(raw, MODEL, "normal")
    for fpir in (0.001, 0.01, 0.1, 0.5):
        threshold = threshold_for_fpir(exact, fpir, 1)
        allowed = np.floor(1500 * fpir + 1e-9)
        assert (raw > threshold.value).sum() <= allowed
        assert (raw >= threshold.value).sum() > allowed  # no lower threshold would do
        assert threshold.value == np.quantile(raw, 1 - allowed / 1500, method="inverted_cdf")


def test_threshold_is_monotone_and_the_table_conservative(rng: np.random.Generator) -> None:
    raw = rng.normal(0.0, 0.1, size=200_000).astype(np.float32)
    table = ImpostorScores.from_scores(raw, MODEL, "normal")
    assert table.scores.size < 5000
    descending = np.sort(raw)[::-1]

    values = [threshold_for_fpir(table, fpir, 50).value for fpir in np.geomspace(1e-5, 0.9, 40)]
    assert all(a >= b for a, b in itertools.pairwise(values))
    values = [threshold_for_fpir(table, 0.01, n).value for n in (1, 2, 10, 100, 1000, 10**5)]
    assert all(a <= b for a, b in itertools.pairwise(values))

    for fpir, comparisons in ((0.01, 10), (0.1, 3), (0.3, 1)):
        threshold = threshold_for_fpir(table, fpir, comparisons)
        rank = int(np.floor(200_000 * threshold.far_per_comparison + 1e-9))
        assert threshold.value >= descending[rank]  # never below the full sample's threshold
        assert (raw > threshold.value).sum() >= 0.99 * rank  # and barely above it


def test_impostor_scores_from_embeddings_scores_every_cross_identity_pair(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(calibration_module, "_PAIR_BLOCK_ELEMENTS", 100)  # several blocks
    vectors = unit_vectors(rng, 40)
    identities = [f"person{i % 8}" for i in range(40)]
    scores = impostor_scores_from_embeddings(vectors, identities, MODEL, "synthetic")

    brute = sorted(
        (
            float(vectors[i] @ vectors[j])
            for i, j in itertools.combinations(range(40), 2)
            if identities[i] != identities[j]
        ),
        reverse=True,
    )
    assert scores.pairs == len(brute) == 40 * 39 // 2 - 8 * (5 * 4 // 2)
    np.testing.assert_allclose(scores.scores, brute, atol=1e-6)
    with pytest.raises(GalleryError, match="two different people"):
        impostor_scores_from_embeddings(vectors[:3], ["a", "a", "a"], MODEL, "one person")


def test_impostor_scores_json_round_trip(rng: np.random.Generator) -> None:
    scores = ImpostorScores.from_scores(rng.normal(0, 0.1, 50_000), MODEL, "synthetic")
    again = ImpostorScores.from_json(scores.to_json())
    assert (again.model_version, again.source, again.pairs) == (MODEL, "synthetic", 50_000)
    np.testing.assert_array_equal(again.scores, scores.scores)
    np.testing.assert_array_equal(again.ranks, scores.ranks)
    assert threshold_for_fpir(again, 0.01, 7) == threshold_for_fpir(scores, 0.01, 7)
    with pytest.raises(GalleryError, match="calibrate"):
        ImpostorScores.from_json('{"format": "something else"}')


def test_gallery_keeps_its_calibration(store: Path, rng: np.random.Generator) -> None:
    db, key = store / "gallery.db", store / "store.key"
    scores = ImpostorScores.from_scores(rng.normal(0, 0.1, 5000), MODEL, "synthetic")
    with Gallery.create(db, key) as gallery:
        assert gallery.calibration() is None
        gallery.set_calibration(scores, 0.001)
    with Gallery.open(db, key) as gallery:
        stored = gallery.calibration()
    assert stored is not None
    assert stored[1] == 0.001 and stored[0].model_version == MODEL
    np.testing.assert_array_equal(stored[0].scores, scores.scores)
