"""`loyalnet store withdraw | purge | scrub | check` end to end, in child processes.

The members are enrolled in-process with SYNTHETIC embeddings and crops (the commands under test
never look at faces); the commands run as the real `loyalnet` program.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from synthetic import random_crops, unit_vectors
from test_cli_store import loyalnet
from typer.testing import CliRunner

from store_node.cli import store_app
from store_node.gallery import Gallery, database

MODEL = "synthetic-model"


def test_withdraw_purge_scrub_and_check(tmp_path: Path) -> None:
    store = tmp_path / "store"
    loyalnet("store", "init", store=store)
    member = "[bold]W-1[/bold]"  # must be printed as typed, never read as markup
    rng = np.random.default_rng(12)
    with Gallery.open(store / "gallery.db", store / "store.key") as gallery:
        gallery.enrol(
            member,
            "[red]Wanda[/red]",
            None,
            "recognition,model_improvement",
            "2026-11",
            365,
            unit_vectors(rng, 2),
            MODEL,
            random_crops(rng, 2),
            now=datetime.now(UTC),
        )
        expired_at = datetime(2020, 1, 1, tzinfo=UTC)
        gallery.enrol(
            "P-2",
            "Pat",
            None,
            "recognition",
            "2020-01",
            30,
            unit_vectors(rng, 3),
            MODEL,
            now=expired_at,
        )

    done = loyalnet("store", "withdraw", member, "--purpose", "model_improvement", store=store)
    assert f"member {member} withdrew model_improvement (recorded)" in done.stdout
    assert "consent in force now: recognition until" in done.stdout
    assert "deleted 0 template(s), 2 crop(s), 0 class row(s)" in done.stdout

    purged = json.loads(loyalnet("store", "purge", "--json", store=store).stdout)
    assert (purged["members"], purged["templates_removed"], purged["tampered"]) == (1, 3, 0)
    assert "P-2" not in json.dumps(purged)  # keyed pseudonyms only

    withdrawn = json.loads(
        loyalnet(
            "store", "withdraw", member, "--purpose", "recognition", "--json", store=store
        ).stdout
    )
    assert withdrawn["member"] == member
    assert (withdrawn["templates_removed"], withdrawn["purposes"]) == (2, [])
    assert withdrawn["consent_expires_at"] is None

    assert "scrubbed: no deleted row remains" in loyalnet("store", "scrub", store=store).stdout

    # An expiry pushed back without the key: the check names the member and fails.
    connection = sqlite3.connect(store / "gallery.db")
    with connection:
        connection.execute(
            "UPDATE consents SET expires_at = '2099-01-01 00:00:00.000000' WHERE member_id = 'P-2'"
        )
    connection.close()
    checked = loyalnet("store", "check", store=store, check=False)
    assert checked.returncode == 1
    assert checked.stdout.startswith("member P-2: consent records failed their integrity check")


def test_scrub_reports_still_blocked_then_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In-process (CliRunner), so the busy timeout can be shortened from 5 s to 0.2 s.
    pragmas = tuple(
        "PRAGMA busy_timeout = 200" if p.startswith("PRAGMA busy_timeout") else p
        for p in database._CONNECTION_PRAGMAS
    )
    monkeypatch.setattr(database, "_CONNECTION_PRAGMAS", pragmas)
    store = tmp_path / "store"
    runner = CliRunner()
    assert runner.invoke(store_app, ["init", "--store", str(store)]).exit_code == 0

    reader = sqlite3.connect(store / "gallery.db", isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM members").fetchall()
    try:
        blocked = runner.invoke(store_app, ["scrub", "--store", str(store), "--json"])
    finally:
        reader.execute("COMMIT")
        reader.close()
    assert blocked.exit_code == 1
    report = json.loads(blocked.stdout)
    assert report["scrubbed"] is False and "loyalnet store scrub" in report["detail"]

    done = runner.invoke(store_app, ["scrub", "--store", str(store), "--json"])
    assert done.exit_code == 0 and json.loads(done.stdout) == {"scrubbed": True}
