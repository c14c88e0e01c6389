"""Bring a schema-1 gallery (names, tiers and consent in clear, unauthenticated) to schema 2.

In place and in one transaction: each member's name and tier are sealed into ``sealed_profile``
and their clear columns dropped; each member's consent rows, in recording order, get their chain
number and tag, and the member row its head tag (see :mod:`.sealing`). Then the file is scrubbed
(VACUUM, write-ahead log emptied) so the clear names survive in no page of the store folder.

Schema 1 could not tell an edited consent from a real one, so migrating vouches for the consent
rows as they are: migrate a gallery you trust (restore it from backup first if in doubt). The
migrated tables carry the new columns as nullable (SQLite cannot add NOT NULL columns to rows
that exist); the gallery always fills them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from store_node.gallery import database, sealing
from store_node.gallery.errors import DamagedGalleryError, GalleryNotFoundError
from store_node.gallery.gallery import Gallery, _check_key, _check_structure
from store_node.gallery.keyfile import StoreKey
from store_node.gallery.models import META_KEY_CHECK, META_SCHEMA_VERSION, SCHEMA_VERSION
from store_node.gallery.records import Removed

_FROM_VERSION = 1


@dataclass(frozen=True)
class MigrationResult:
    """What ``migrate_gallery`` did.

    Attributes:
        from_version: the schema the gallery had (equal to ``to_version`` when already current).
        to_version: the schema it has now.
        members: members whose name and tier were sealed.
        consents: consent rows tagged.
    """

    from_version: int
    to_version: int
    members: int
    consents: int


def migrate_gallery(db_path: Path, key_path: Path) -> MigrationResult:
    """Migrate the gallery at ``db_path`` to the current schema, sealing with ``key_path``.

    A gallery already at the current schema is left untouched.

    Raises:
        GalleryNotFoundError, KeyFileError, WrongKeyError: as for ``Gallery.open``.
        DamagedGalleryError: the file is not a loyalnet gallery, or has a schema this loyalnet
            cannot migrate.
        GalleryBusyError: another program holds the gallery; nothing was changed.
        ScrubError: migrated, but another program kept old pages (with the clear names) alive;
            ``loyalnet store scrub`` finishes the job.
    """
    db_path, key_path = Path(db_path), Path(key_path)
    if not db_path.is_file():
        raise GalleryNotFoundError(f"no gallery at {db_path}; point at the store's gallery.db.")
    key = StoreKey.load(key_path)
    engine = database.open_engine(db_path)
    try:
        with database.translated_errors(db_path):
            _check_structure(engine, db_path)
            with database.writer(engine).begin() as connection:
                rows = connection.exec_driver_sql("SELECT key, value FROM store_meta")
                meta = {str(name): bytes(value) for name, value in rows}
                version = _version(meta, db_path)
                if version == SCHEMA_VERSION:
                    return MigrationResult(version, version, 0, 0)
                if META_KEY_CHECK not in meta:
                    raise DamagedGalleryError(
                        f"{db_path} has no key check, so it is not a loyalnet gallery or is "
                        "damaged; restore it from backup."
                    )
                _check_key(meta[META_KEY_CHECK], key, db_path, key_path)
                members, consents, names = _migrate(connection, key)
        # Package-internal access: the gallery's scrub, with its exact "what is left" message.
        Gallery(db_path, key, engine)._scrub(
            f"{db_path} was migrated to schema {SCHEMA_VERSION}",
            Removed(),
            [name.encode("utf-8") for name in names if len(name) >= 4],
        )
        return MigrationResult(version, SCHEMA_VERSION, members, consents)
    finally:
        engine.dispose()


def _version(meta: dict[str, bytes], db_path: Path) -> int:
    raw = meta.get(META_SCHEMA_VERSION)
    text = raw.decode(errors="replace") if raw is not None else ""
    if text not in (str(_FROM_VERSION), str(SCHEMA_VERSION)):
        raise DamagedGalleryError(
            f"{db_path} has gallery schema {text or 'none'}; this loyalnet migrates schema "
            f"{_FROM_VERSION} to {SCHEMA_VERSION} only. Use the loyalnet version that wrote it."
        )
    return int(text)


def _migrate(connection: Connection, key: StoreKey) -> tuple[int, int, list[str]]:
    """The schema change and the sealing, inside the caller's transaction."""
    tag_key = key.derive(sealing.CONSENT_TAG_PURPOSE)
    run = connection.exec_driver_sql
    for statement in (
        "ALTER TABLE members ADD COLUMN sealed_profile BLOB",
        "ALTER TABLE members ADD COLUMN consent_count INTEGER",
        "ALTER TABLE members ADD COLUMN consent_head BLOB",
        "ALTER TABLE consents ADD COLUMN seq INTEGER",
        "ALTER TABLE consents ADD COLUMN tag BLOB",
    ):
        run(statement)
    members = run("SELECT member_id, display_name, tier FROM members").all()
    names: list[str] = []
    consents = 0
    for member_id, display_name, tier in members:
        profile = sealing.Profile(display_name, tier)
        names += [text for text in (display_name, tier) if text]
        rows = run(
            "SELECT id, purposes, policy_version, granted_at, expires_at FROM consents "
            "WHERE member_id = ? ORDER BY id",
            (member_id,),
        ).all()
        previous = b""
        for seq, (row_id, purposes, policy, granted, expires) in enumerate(rows, start=1):
            previous = sealing.consent_tag(
                tag_key, member_id, seq, previous, purposes, policy, _utc(granted), _utc(expires)
            )
            run("UPDATE consents SET seq = ?, tag = ? WHERE id = ?", (seq, previous, row_id))
        run(
            "UPDATE members SET sealed_profile = ?, consent_count = ?, consent_head = ? "
            "WHERE member_id = ?",
            (
                sealing.seal_profile(key, member_id, profile),
                len(rows),
                sealing.consent_head(tag_key, member_id, len(rows), previous),
                member_id,
            ),
        )
        consents += len(rows)
    for statement in (
        "ALTER TABLE members DROP COLUMN display_name",
        "ALTER TABLE members DROP COLUMN tier",
        "CREATE UNIQUE INDEX IF NOT EXISTS uq_consents_member_seq ON consents (member_id, seq)",
    ):
        run(statement)
    run(
        "UPDATE store_meta SET value = ? WHERE key = ?",
        (str(SCHEMA_VERSION).encode(), META_SCHEMA_VERSION),
    )
    return len(members), consents, names


def _utc(value: Any) -> datetime:
    """A stored instant (naive UTC text, as the gallery writes it) as an aware datetime."""
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return parsed.replace(tzinfo=UTC)
