"""Personal data sealed, consent honest, nothing half-written (issue 12).

Names and tiers sealed; consent rows authenticated (an edit counts as no consent); withdrawal;
purging expired consents on a fake clock; enrolment in one transaction; an erasure blocked by
another reader, finished by a scrub; the old schema refused; and random sequences of enrol /
erase / withdraw / purge that never leave a removed member's bytes in the store folder.

SYNTHETIC data, as in ``test_gallery.py``: random unit vectors and random uint8 "crops" stand in
for the face pipeline's output.
"""

from __future__ import annotations

import contextlib
import sqlite3
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from synthetic import random_crops, unit_vectors

from store_node.enrolment import EnrolmentRequest, enrol_aligned
from store_node.gallery import (
    AuditAction,
    ConsentError,
    DamagedGalleryError,
    Gallery,
    GalleryBusyError,
    InvalidInputError,
    Purpose,
    ScrubError,
    UnknownMemberError,
    database,
)
from store_node.gallery.class_weights import load_class_weights, save_class_weights
from store_node.gallery.migration import MigrationResult, migrate_gallery
from store_node.gallery.training_data import training_examples

MODEL = "mobilefacenet-ms1m-90a00ba1"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
BOTH = "recognition,model_improvement"


# -- helpers -----------------------------------------------------------------------------------


def folder_bytes(folder: Path) -> dict[str, bytes]:
    """Every file of ``folder`` (db, -wal, -shm, key), by name."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def pieces(blob: bytes) -> list[bytes]:
    """Three 32-byte pieces of a sealed value: any of them is found only where the value is."""
    return [blob[:32], blob[len(blob) // 2 : len(blob) // 2 + 32], blob[-32:]]


def holders(needles: list[bytes], files: dict[str, bytes]) -> list[str]:
    """Names of the files that hold any of ``needles``."""
    return [name for name, data in files.items() if any(n in data for n in needles)]


def raw_rows(db: Path, sql: str, *args: object) -> list[tuple[Any, ...]]:
    connection = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return list(connection.execute(sql, args))
    finally:
        connection.close()


def raw_write(db: Path, sql: str, *args: object) -> None:
    """A change made without the key, as anyone with the file could."""
    connection = sqlite3.connect(db)
    with connection:
        connection.execute(sql, args)
    connection.close()


def sealed_blobs(db: Path, member_id: str) -> list[bytes]:
    """Every sealed biometric of the member: templates, crops, class rows."""
    out: list[bytes] = []
    for column, table in (
        ("sealed_embedding", "templates"),
        ("sealed_crop", "enrolment_crops"),
        ("sealed_weight", "class_weights"),
    ):
        sql = f"SELECT {column} FROM {table} WHERE member_id = ?"
        out += [bytes(row[0]) for row in raw_rows(db, sql, member_id)]
    return out


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261201)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    folder = tmp_path / "store"
    folder.mkdir()
    return folder


@pytest.fixture
def gallery(store: Path) -> Iterator[Gallery]:
    with Gallery.create(store / "gallery.db", store / "store.key") as opened:
        yield opened


@pytest.fixture
def short_busy_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Wait 0.2 s, not 5 s, for another program's lock (connections opened from now on)."""
    pragmas = tuple(
        "PRAGMA busy_timeout = 200" if p.startswith("PRAGMA busy_timeout") else p
        for p in database._CONNECTION_PRAGMAS
    )
    monkeypatch.setattr(database, "_CONNECTION_PRAGMAS", pragmas)


def enrol(
    gallery: Gallery,
    rng: np.random.Generator,
    member_id: str,
    purposes: str = BOTH,
    retention_days: int = 365,
    now: datetime = T0,
    count: int = 2,
    name: str | None = None,
) -> None:
    gallery.enrol(
        member_id,
        name or f"name of {member_id}",
        "gold",
        purposes,
        "2026-11",
        retention_days,
        unit_vectors(rng, count),
        MODEL,
        random_crops(rng, count),
        now=now,
    )


def matched(gallery: Gallery, member_id: str, now: datetime) -> bool:
    """Whether the member's templates are searched at ``now`` (consent to recognition)."""
    return any(
        s.member_id == member_id and Purpose.RECOGNITION in s.purposes and s.templates > 0
        for s in gallery.members(now)
    )


# -- names and tiers sealed --------------------------------------------------------------------


def test_names_and_tiers_are_sealed_at_rest(store: Path, rng: np.random.Generator) -> None:
    name, tier = "Zelda Quixote-Plaintext", "platinum-secret-tier"
    with Gallery.create(store / "gallery.db", store / "store.key") as gallery:
        enrol(gallery, rng, "M1", name=name)
        gallery.add_member("M1", name, tier)
        enrol(gallery, rng, "M2", name="Another Person Entirely")
        (first, _) = gallery.members()
        assert (first.display_name, first.tier, first.problems) == (name, tier, ())
        while_open = folder_bytes(store)
    for files in (while_open, folder_bytes(store)):
        for text in (name, tier, "Another Person Entirely"):
            assert holders([text.encode()], files) == [], f"{text!r} is readable"
    # Padded: names of different lengths seal to the same size.
    lengths = raw_rows(store / "gallery.db", "SELECT length(sealed_profile) FROM members")
    assert len(set(lengths)) == 1


def test_a_name_moved_to_another_member_is_reported(
    gallery: Gallery, rng: np.random.Generator
) -> None:
    enrol(gallery, rng, "M1")
    enrol(gallery, rng, "M2")
    raw_write(
        gallery.db_path,
        "UPDATE members SET sealed_profile = "
        "(SELECT sealed_profile FROM members WHERE member_id = 'M1') WHERE member_id = 'M2'",
    )
    listed = {s.member_id: s for s in gallery.members(now=T0)}
    assert listed["M2"].display_name is None
    assert "name" in listed["M2"].problems[0]
    assert [p.member_id for p in gallery.check()] == ["M2"]
    gallery.add_member("M2", "Mo", None)  # setting the name again repairs it
    assert gallery.check() == []


# -- consent authenticated ---------------------------------------------------------------------


TAMPERING = {
    "expiry pushed back": "UPDATE consents SET expires_at = '2099-01-01 00:00:00.000000' "
    "WHERE member_id = 'M1'",
    "grant moved": "UPDATE consents SET granted_at = '2026-01-01 00:00:00.000000' "
    "WHERE member_id = 'M1'",
    "purpose added": "UPDATE consents SET purposes = 'model_improvement,recognition' "
    "WHERE member_id = 'M1'",
    "policy changed": "UPDATE consents SET policy_version = '2020-01' WHERE member_id = 'M1'",
    "row copied from another member": "INSERT INTO consents "
    "(member_id, seq, purposes, policy_version, granted_at, expires_at, tag) "
    "SELECT 'M1', 2, purposes, policy_version, granted_at, expires_at, tag "
    "FROM consents WHERE member_id = 'M2'",
    "chain head copied from another member": "UPDATE members SET "
    "consent_head = (SELECT consent_head FROM members WHERE member_id = 'M2') "
    "WHERE member_id = 'M1'",
}


@pytest.mark.parametrize("tampering", list(TAMPERING))
def test_a_consent_edited_without_the_key_counts_as_no_consent(
    gallery: Gallery, rng: np.random.Generator, tampering: str
) -> None:
    enrol(gallery, rng, "M1", purposes="recognition", retention_days=30)
    enrol(gallery, rng, "M2", purposes=BOTH, retention_days=3000)
    probe = unit_vectors(rng, 1)
    assert gallery.consent_of("M1", now=T0) is not None

    raw_write(gallery.db_path, TAMPERING[tampering])

    later = T0 + timedelta(days=40)  # M1's real consent has expired by now
    for now in (T0, later):
        assert gallery.consent_of("M1", now=now) is None
        assert not matched(gallery, "M1", now)
    assert gallery.consent_of("M2", now=later) is not None  # the other member is untouched
    assert [(p.member_id, "integrity" in p.problem) for p in gallery.check()] == [("M1", True)]
    assert all(m.member_id != "M1" for m in gallery.identify(probe, MODEL, -1.0, now=T0))

    report = gallery.purge_expired(now=T0)  # no consent counts: the biometrics go
    assert report.member_refs == (gallery.member_ref("M1"),) and report.tampered == 1
    assert gallery.audit_log()[-1].details["reason"] == "consent failed its integrity check"

    # A new consent starts a fresh, sound chain.
    enrol(gallery, rng, "M1", purposes="recognition", now=later)
    assert gallery.check() == []
    consent = gallery.consent_of("M1", now=later)
    assert consent is not None and consent.granted_at == later


def test_an_expired_member_is_not_revived_by_editing_the_date(
    store: Path, rng: np.random.Generator
) -> None:
    db = store / "gallery.db"
    with Gallery.create(db, store / "store.key") as gallery:
        vectors = unit_vectors(rng, 2)
        gallery.enrol("M1", None, None, "recognition", "2026-11", 30, vectors, MODEL, now=T0)
        after = T0 + timedelta(days=31)
        assert gallery.identify(vectors[:1], MODEL, 0.5, now=after)[0].member_id is None
    raw_write(db, "UPDATE consents SET expires_at = '2099-12-31 00:00:00.000000'")
    with Gallery.open(db, store / "store.key") as gallery:
        assert gallery.identify(vectors[:1], MODEL, 0.5, now=after)[0].member_id is None
        assert gallery.template_count(MODEL, now=after) == 0


def test_deleting_a_withdrawal_does_not_revive_the_older_consent(
    gallery: Gallery, rng: np.random.Generator
) -> None:
    enrol(gallery, rng, "M1", purposes=BOTH)
    gallery.withdraw("M1", Purpose.MODEL_IMPROVEMENT, now=T0 + timedelta(days=1))
    raw_write(gallery.db_path, "DELETE FROM consents WHERE member_id = 'M1' AND seq = 2")
    assert gallery.consent_of("M1", now=T0 + timedelta(days=2)) is None
    assert gallery.check()[0].member_id == "M1"


def test_consent_stays_readable_for_an_auditor(gallery: Gallery, rng: np.random.Generator) -> None:
    enrol(gallery, rng, "M1", purposes=BOTH, retention_days=30)
    rows = raw_rows(
        gallery.db_path,
        "SELECT member_id, seq, purposes, policy_version, length(tag) FROM consents",
    )
    assert rows == [("M1", 1, "model_improvement,recognition", "2026-11", 32)]


# -- withdrawal --------------------------------------------------------------------------------


def test_withdrawing_model_improvement_deletes_crops_and_class_rows(
    store: Path, gallery: Gallery, rng: np.random.Generator
) -> None:
    enrol(gallery, rng, "M1", purposes=BOTH)
    save_class_weights(gallery, {"M1": unit_vectors(rng, 1)[0]}, now=T0)
    blobs = sealed_blobs(gallery.db_path, "M1")
    crops_and_rows = blobs[2:]
    assert len(crops_and_rows) == 3

    later = T0 + timedelta(days=1)
    result = gallery.withdraw("M1", "model_improvement", now=later)

    assert (result.removed.templates, result.removed.crops, result.removed.class_weights) == (
        0,
        2,
        1,
    )
    assert result.consent_changed and result.consent is not None
    assert result.consent.purposes == {Purpose.RECOGNITION}
    assert result.consent.expires_at == T0 + timedelta(days=365)  # the old expiry stays
    assert gallery.consent_of("M1", now=later) == result.consent
    assert matched(gallery, "M1", later)
    assert load_class_weights(gallery, ["M1"]) == {}
    assert training_examples(gallery, now=later).member_ids == []
    files = folder_bytes(store)
    assert all(holders(pieces(blob), files) == [] for blob in crops_and_rows)
    assert all(holders(pieces(blob), files) for blob in blobs[:2])  # templates stay
    entry = gallery.audit_log()[-1]
    assert entry.action == AuditAction.WITHDRAW and entry.member_ref == gallery.member_ref("M1")
    assert entry.details["purposes_remaining"] == ["recognition"]
    assert "M1" not in str(entry.details)


def test_withdrawing_recognition_erases_the_biometrics_at_once(
    store: Path, gallery: Gallery, rng: np.random.Generator
) -> None:
    enrol(gallery, rng, "M1", purposes=BOTH)
    enrol(gallery, rng, "M2", purposes=BOTH)
    save_class_weights(gallery, dict(zip(("M1", "M2"), unit_vectors(rng, 2), strict=True)))
    blobs, kept = sealed_blobs(gallery.db_path, "M1"), sealed_blobs(gallery.db_path, "M2")

    later = T0 + timedelta(days=1)
    result = gallery.withdraw("M1", Purpose.RECOGNITION, now=later)

    assert (result.removed.templates, result.removed.crops, result.removed.class_weights) == (
        2,
        2,
        1,
    )
    assert result.consent is not None and result.consent.purposes == {Purpose.MODEL_IMPROVEMENT}
    assert not matched(gallery, "M1", later)
    (summary, _) = gallery.members(now=later)
    assert (summary.member_id, summary.templates, summary.crops) == ("M1", 0, 0)
    files = folder_bytes(store)
    assert all(holders(pieces(blob), files) == [] for blob in blobs)
    assert all(holders(pieces(blob), files) for blob in kept)

    # Withdrawing what remains leaves no consent in force; withdrawing again changes nothing.
    everything = gallery.withdraw("M1", "model_improvement", now=later)
    assert everything.consent is None and everything.consent_changed
    assert gallery.consent_of("M1", now=later) is None
    again = gallery.withdraw("M1", BOTH, now=later + timedelta(days=1))
    assert not again.consent_changed and again.removed.total == 0
    with pytest.raises(UnknownMemberError):
        gallery.withdraw("nobody", "recognition")


def test_a_narrower_consent_without_recognition_deletes_the_templates(
    gallery: Gallery, rng: np.random.Generator
) -> None:
    enrol(gallery, rng, "M1", purposes=BOTH)
    gallery.record_consent("M1", "model_improvement", "2026-11", now=T0 + timedelta(days=1))
    (summary,) = gallery.members(now=T0 + timedelta(days=1))
    assert (summary.templates, summary.crops) == (0, 0)


# -- purge on a fake clock ---------------------------------------------------------------------


def test_purge_expired_follows_the_clock(store: Path, rng: np.random.Generator) -> None:
    db = store / "gallery.db"
    with Gallery.create(db, store / "store.key") as gallery:
        enrol(gallery, rng, "SHORT", retention_days=30)
        enrol(gallery, rng, "MEDIUM", retention_days=60)
        enrol(gallery, rng, "LONG", purposes="recognition", retention_days=365)
        save_class_weights(
            gallery, dict(zip(("SHORT", "MEDIUM"), unit_vectors(rng, 2), strict=True))
        )
        short, medium = sealed_blobs(db, "SHORT"), sealed_blobs(db, "MEDIUM")
        long_ = sealed_blobs(db, "LONG")

        nothing = gallery.purge_expired(now=T0 + timedelta(days=10))
        assert nothing.member_refs == () and nothing.removed.total == 0

        first = gallery.purge_expired(now=T0 + timedelta(days=31))
        assert first.member_refs == (gallery.member_ref("SHORT"),)
        assert (first.removed.templates, first.removed.crops, first.removed.class_weights) == (
            2,
            2,
            1,
        )
        entry = gallery.audit_log()[-1]
        assert entry.action == AuditAction.PURGE and entry.receipt_id == first.receipt_ids[0]
        assert dict(entry.details) == {
            "reason": "no consent in force",
            "templates_removed": 2,
            "crops_removed": 2,
            "class_weights_removed": 1,
        }
        listed = {s.member_id: s for s in gallery.members(now=T0 + timedelta(days=31))}
        assert listed["SHORT"].templates == 0 and listed["SHORT"].display_name == "name of SHORT"
        assert listed["MEDIUM"].templates == 2

        second = gallery.purge_expired(now=T0 + timedelta(days=61))
        assert second.member_refs == (gallery.member_ref("MEDIUM"),)
        assert gallery.purge_expired(now=T0 + timedelta(days=62)).removed.total == 0
        while_open = folder_bytes(store)
    for files in (while_open, folder_bytes(store)):
        assert all(holders(pieces(blob), files) == [] for blob in short + medium)
        assert all(holders(pieces(blob), files) for blob in long_)


# -- enrolment in one transaction --------------------------------------------------------------


@pytest.mark.parametrize("retention_days", [1.5, 100_000, True, 0, -1])
def test_a_bad_retention_leaves_the_gallery_byte_for_byte_unchanged(
    store: Path, gallery: Gallery, rng: np.random.Generator, retention_days: Any
) -> None:
    enrol(gallery, rng, "OTHER")
    gallery.scrub()
    before = folder_bytes(store)
    with pytest.raises(InvalidInputError, match="retention"):
        gallery.enrol(
            "NEW",
            "Nina",
            "gold",
            BOTH,
            "2026-11",
            retention_days,
            unit_vectors(rng, 2),
            MODEL,
            random_crops(rng, 2),
            now=T0,
        )
    assert folder_bytes(store) == before
    assert raw_rows(gallery.db_path, "SELECT count(*) FROM members WHERE member_id = 'NEW'") == [
        (0,)
    ]


def test_enrolment_is_one_transaction(
    store: Path, gallery: Gallery, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConsentError, match="recognition"):
        gallery.enrol(
            "NEW", None, None, "model_improvement", "2026-11", 30, unit_vectors(rng, 1), MODEL
        )

    # A failure while writing (here: sealing the crops) rolls back the member and consent too.
    from store_node.gallery import sealing

    def broken(*_args: object) -> bytes:
        raise RuntimeError("disk full")

    monkeypatch.setattr(sealing, "seal_crop", broken)
    with pytest.raises(RuntimeError):
        enrol(gallery, rng, "NEW")
    monkeypatch.undo()
    assert gallery.members() == []
    assert raw_rows(gallery.db_path, "SELECT count(*) FROM consents") == [(0,)]

    enrolled = gallery.enrol(
        "NEW", "Nina", None, BOTH, "2026-11", 30, unit_vectors(rng, 2), MODEL, random_crops(rng, 2)
    )
    assert (enrolled.templates_added, enrolled.crops_stored, enrolled.crops_removed) == (2, 2, 0)
    assert enrolled.consent.purposes == {Purpose.RECOGNITION, Purpose.MODEL_IMPROVEMENT}
    actions = [e.action for e in gallery.audit_log()]
    assert actions == [AuditAction.MEMBER, AuditAction.CONSENT, AuditAction.ENROL]


class _FakePipeline:
    """Just what ``enrol_aligned`` asks of a face pipeline."""

    model_version = MODEL

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng

    def embed(self, crops: Any) -> Any:
        return unit_vectors(self._rng, len(crops))


@pytest.mark.parametrize("retention_days", [1.5, 100_000, True])
def test_enrol_aligned_with_a_bad_retention_writes_nothing(
    store: Path, gallery: Gallery, rng: np.random.Generator, retention_days: Any
) -> None:
    before = folder_bytes(store)
    request = EnrolmentRequest(
        "NEW", frozenset({Purpose.RECOGNITION}), "2026-11", retention_days, "Nina"
    )
    with pytest.raises(InvalidInputError):
        enrol_aligned(gallery, _FakePipeline(rng), request, random_crops(rng, 2))  # type: ignore[arg-type]
    assert folder_bytes(store) == before
    assert gallery.members() == []

    good = EnrolmentRequest("NEW", frozenset({Purpose.RECOGNITION}), "2026-11", 30, "Nina")
    report = enrol_aligned(gallery, _FakePipeline(rng), good, random_crops(rng, 2))  # type: ignore[arg-type]
    assert (report.templates_added, report.crops_stored) == (2, 0)


# -- an erasure another program blocks ---------------------------------------------------------


def test_an_erasure_blocked_by_a_reader_says_what_is_left_and_scrub_finishes(
    store: Path, rng: np.random.Generator, short_busy_timeout: None
) -> None:
    db = store / "gallery.db"
    erased_id, name = "ERASE-ME-7f3a9c21d4e8", "Erin Blocked-Erasure"
    with Gallery.create(db, store / "store.key") as gallery:
        enrol(gallery, rng, erased_id, name=name)
        enrol(gallery, rng, "KEEP-ME-0001")
        save_class_weights(gallery, {erased_id: unit_vectors(rng, 1)[0]})
        gallery.scrub()  # start from an empty write-ahead log
        blobs = sealed_blobs(db, erased_id)
        assert len(blobs) == 5

        reader = sqlite3.connect(db, isolation_level=None)
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM members").fetchone() == (2,)
        try:
            with pytest.raises(ScrubError) as raised:
                gallery.erase(erased_id, now=T0 + timedelta(days=1))
            message = str(raised.value)
            # The deletion committed: the gallery no longer knows the member.
            assert [m.member_id for m in gallery.members()] == ["KEEP-ME-0001"]
            assert gallery.was_erased(erased_id)
            # The message names exactly the files that still hold the member's bytes.
            needles = [erased_id.encode(), *(blob[:32] for blob in blobs)]
            left = holders(needles, folder_bytes(store))
            assert "gallery.db" in left
            assert f"old copies of the deleted rows remain in {' and '.join(left)};" in message
            assert "(receipt " in message and "deletion is committed" in message
            assert "loyalnet store scrub" in message
            assert "\n" not in message
            # Scrubbing while the reader still holds its snapshot is still blocked.
            with pytest.raises(ScrubError, match="loyalnet store scrub"):
                gallery.scrub()
        finally:
            reader.execute("COMMIT")
            reader.close()

        gallery.scrub()
        while_open = folder_bytes(store)
    for files in (while_open, folder_bytes(store)):
        assert holders([erased_id.encode(), name.encode()], files) == []
        assert all(holders(pieces(blob), files) == [] for blob in blobs)


def test_an_erasure_that_cannot_commit_says_nothing_changed(
    short_busy_timeout: None, gallery: Gallery, rng: np.random.Generator
) -> None:
    enrol(gallery, rng, "M1")
    writer = sqlite3.connect(gallery.db_path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(GalleryBusyError, match="M1 was not erased, nothing was changed"):
            gallery.erase("M1")
        with pytest.raises(GalleryBusyError, match="nothing was purged"):
            gallery.purge_expired()
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert [m.member_id for m in gallery.members()] == ["M1"]


# -- schema ------------------------------------------------------------------------------------


def test_an_older_schema_is_refused_with_a_clear_message(store: Path) -> None:
    db, key = store / "gallery.db", store / "store.key"
    Gallery.create(db, key).close()
    raw_write(db, "UPDATE store_meta SET value = ? WHERE key = 'schema_version'", b"1")
    with pytest.raises(DamagedGalleryError, match=r"schema 1, written by an older loyalnet"):
        Gallery.open(db, key)


# -- random sequences never leave a removed member's bytes -------------------------------------

FUZZ_MEMBERS = 3
_member = st.integers(0, FUZZ_MEMBERS - 1)
_operation = st.one_of(
    st.tuples(
        st.just("enrol"), _member, st.sampled_from(["recognition", BOTH]), st.integers(1, 20)
    ),
    st.tuples(st.just("erase"), _member),
    st.tuples(st.just("withdraw"), _member, st.sampled_from(["recognition", "model_improvement"])),
    st.tuples(st.just("purge")),
    st.tuples(st.just("train")),
    st.tuples(st.just("wait"), st.integers(1, 15)),
)


def _blobs_by_member(db: Path) -> dict[str, set[bytes]]:
    found: dict[str, set[bytes]] = defaultdict(set)
    for column, table in (
        ("sealed_embedding", "templates"),
        ("sealed_crop", "enrolment_crops"),
        ("sealed_weight", "class_weights"),
    ):
        for member, blob in raw_rows(db, f"SELECT member_id, {column} FROM {table}"):
            found[member].add(bytes(blob))
    return found


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(operations=st.lists(_operation, min_size=1, max_size=10), seed=st.integers(0, 2**32 - 1))
def test_random_sequences_leave_no_removed_bytes(
    operations: list[tuple[Any, ...]], seed: int
) -> None:
    rng = np.random.default_rng(seed)
    ids = [f"FUZZ-{i}-{int(rng.integers(1 << 62)):016x}" for i in range(FUZZ_MEMBERS)]
    names = [f"Fuzzy Name {int(rng.integers(1 << 62)):016x}" for _ in range(FUZZ_MEMBERS)]
    now = T0
    gone_blobs: set[bytes] = set()
    gone_text: set[bytes] = set()
    seen: dict[str, set[bytes]] = defaultdict(set)
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp)
        db = store / "gallery.db"
        with Gallery.create(db, store / "store.key") as gallery:
            for operation in operations:
                before = _blobs_by_member(db)
                kind = operation[0]
                if kind == "enrol":
                    _, who, purposes, days = operation
                    gallery.enrol(
                        ids[who],
                        names[who],
                        "gold",
                        purposes,
                        "2026-11",
                        days,
                        unit_vectors(rng, 1),
                        MODEL,
                        random_crops(rng, 1),
                        now=now,
                    )
                    gone_text -= {ids[who].encode(), names[who].encode()}
                elif kind == "erase":
                    try:
                        gallery.erase(ids[operation[1]], now=now)
                    except UnknownMemberError:
                        pass
                    else:
                        gone_text |= {ids[operation[1]].encode(), names[operation[1]].encode()}
                elif kind == "withdraw":
                    with contextlib.suppress(UnknownMemberError):
                        gallery.withdraw(ids[operation[1]], operation[2], now=now)
                elif kind == "purge":
                    gallery.purge_expired(now=now)
                    for summary in gallery.members(now):
                        if Purpose.RECOGNITION not in summary.purposes:
                            assert summary.templates == 0, "an expired member kept templates"
                        if Purpose.MODEL_IMPROVEMENT not in summary.purposes:
                            assert summary.crops == 0, "crops outlived their consent"
                elif kind == "train":
                    save_class_weights(
                        gallery, dict(zip(ids, unit_vectors(rng, FUZZ_MEMBERS), strict=True))
                    )
                else:
                    now += timedelta(days=operation[1])
                after = _blobs_by_member(db)
                for member, blobs in after.items():
                    seen[member] |= blobs
                if kind != "train":  # retraining replaces class rows; it removes no one's data
                    for member, blobs in before.items():
                        if blobs - after.get(member, set()):
                            # Every version the member's values ever had must be gone, not
                            # just the last one (old class rows linger in the log until then).
                            gone_blobs |= seen[member] - after.get(member, set())
                files = folder_bytes(store)
                assert holders(sorted(gone_text), files) == [], f"after {operation}"
                for blob in gone_blobs:
                    assert holders(pieces(blob), files) == [], f"a removed value after {operation}"
        files = folder_bytes(store)
        assert holders(sorted(gone_text), files) == []
        assert all(holders(pieces(blob), files) == [] for blob in gone_blobs)


def _downgrade_to_schema_1(db: Path, consents: list[tuple[str, str, datetime, datetime]]) -> None:
    """Rewrite a fresh gallery's members and consents as schema 1 had them (all in clear)."""
    stamp = "%Y-%m-%d %H:%M:%S.%f"
    connection = sqlite3.connect(db, isolation_level=None)
    connection.executescript(
        """
        DROP TABLE consents;
        CREATE TABLE members_v1 (
            member_id VARCHAR(128) NOT NULL PRIMARY KEY, display_name VARCHAR(200),
            tier VARCHAR(64), created_at DATETIME NOT NULL);
        INSERT INTO members_v1 (member_id, created_at) SELECT member_id, created_at FROM members;
        DROP TABLE members;
        ALTER TABLE members_v1 RENAME TO members;
        CREATE TABLE consents (
            id INTEGER NOT NULL PRIMARY KEY,
            member_id VARCHAR(128) NOT NULL REFERENCES members (member_id) ON DELETE CASCADE,
            purposes VARCHAR(200) NOT NULL, policy_version VARCHAR(64) NOT NULL,
            granted_at DATETIME NOT NULL, expires_at DATETIME NOT NULL);
        UPDATE store_meta SET value = X'31' WHERE key = 'schema_version';
        UPDATE members SET display_name = 'Maria Migrated-Plaintext', tier = 'silver-v1-tier'
            WHERE member_id = 'M1';
        """
    )
    for member, purposes, granted, expires in consents:
        connection.execute(
            "INSERT INTO consents (member_id, purposes, policy_version, granted_at, expires_at) "
            "VALUES (?, ?, '2026-11', ?, ?)",
            (member, purposes, granted.strftime(stamp), expires.strftime(stamp)),
        )
    connection.execute("VACUUM")
    connection.close()


def test_a_schema_1_gallery_is_migrated_in_place(store: Path, rng: np.random.Generator) -> None:
    db, key = store / "gallery.db", store / "store.key"
    with Gallery.create(db, key) as gallery:
        enrol(gallery, rng, "M1", purposes="recognition")
        enrol(gallery, rng, "M2", purposes="recognition")
    year = timedelta(days=365)
    _downgrade_to_schema_1(
        db,
        [
            ("M1", "model_improvement,recognition", T0, T0 + year),
            ("M1", "recognition", T0 + timedelta(days=1), T0 + year),
            ("M2", "recognition", T0, T0 + timedelta(days=30)),
        ],
    )
    assert holders([b"Maria Migrated-Plaintext"], folder_bytes(store)) == ["gallery.db"]
    with pytest.raises(DamagedGalleryError, match="loyalnet store migrate"):
        Gallery.open(db, key)

    result = migrate_gallery(db, key)

    assert (result.from_version, result.to_version, result.members, result.consents) == (
        1,
        2,
        2,
        3,
    )
    with Gallery.open(db, key) as gallery:
        assert gallery.check() == []
        listed = {s.member_id: s for s in gallery.members(now=T0 + timedelta(days=2))}
        assert (listed["M1"].display_name, listed["M1"].tier) == (
            "Maria Migrated-Plaintext",
            "silver-v1-tier",
        )
        assert listed["M1"].purposes == {Purpose.RECOGNITION}
        assert listed["M2"].consent_expires_at == T0 + timedelta(days=30)
        assert gallery.template_count(MODEL, now=T0 + timedelta(days=2)) == 4
        # Migrated consents are authenticated like new ones, and new ones chain on.
        gallery.withdraw("M1", "recognition", now=T0 + timedelta(days=3))
        assert gallery.check() == []
        raw_write(
            db, "UPDATE consents SET expires_at = '2099-01-01 00:00:00' WHERE member_id = 'M2'"
        )
        assert [p.member_id for p in gallery.check()] == ["M2"]
    for text in (b"Maria Migrated-Plaintext", b"silver-v1-tier"):
        assert holders([text], folder_bytes(store)) == []
    assert migrate_gallery(db, key) == MigrationResult(2, 2, 0, 0)
