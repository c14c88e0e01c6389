"""The demos as a user runs them: real processes, real faces, JSON summaries."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


def run_demo(*args: str, timeout: float) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "loyalnet_cli", "demo", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "LOYALNET_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert isinstance(summary, dict)
    return summary


def test_store_walkthrough() -> None:
    summary = run_demo("store", "--members", "6", "--strangers", "10", timeout=300)
    assert summary["members"] == 6
    assert summary["members_enrolled"] >= 5
    assert isinstance(summary["rank1"], float) and summary["rank1"] >= 0.8
    assert summary["strangers"] == 10
    assert summary["strangers_accepted"] <= 1
    assert summary["erased_member_after"] == "unknown"


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for status in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            command = status.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in command:
            found.append(command)
    return found


@pytest.mark.slow
def test_federated_demo_keeps_its_chain_running_until_interrupted(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    command = [
        *(sys.executable, "-m", "loyalnet_cli", "demo", "--rounds", "1", "--members", "6"),
        *("--workdir", str(workdir), "--keep", "--json"),
    ]
    demo = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "LOYALNET_THREADS": "1"},
    )
    try:
        assert demo.stdout is not None
        line = demo.stdout.readline()  # the summary, printed before the demo holds
        assert line, demo.stderr.read() if demo.stderr else ""
        summary = json.loads(line)
        stores = summary["stores"]
        assert isinstance(stores, dict) and len(stores) == 3
        for row in stores.values():
            assert row["members"] >= 5
            assert 0.0 <= row["rank1_before"] <= 1.0 and 0.0 <= row["rank1_after"] <= 1.0
            assert 0.0 <= row["tar_at_far_1e-2_before"] <= 1.0
            assert 0.0 <= row["tar_at_far_1e-2_after"] <= 1.0
            # Issue 13's promise: at most one stranger accepted anywhere, before and after.
            assert row["strangers_accepted_before"] <= 1 and row["strangers_accepted_after"] <= 1
            for moment in ("before", "after"):
                low, high = row[f"fpir_interval_{moment}"]
                assert low <= row[f"fpir_measured_{moment}"] <= high
        assert summary["rounds"] == 1
        # About half the backbone: its change in float16, the demo's default encoding.
        assert summary["update_encoding"] == "float16-delta"
        sent = summary["bytes_sent_per_store_per_round"]
        assert 0.45 * summary["model_bytes"] < sent < 0.6 * summary["model_bytes"]
        assert 0 < summary["training_seconds_per_round"] < summary["seconds_per_round"]
        assert summary["epsilon"] is None

        # The chain still runs: its admins see every store online on the promoted model.
        admin = subprocess.run(
            [
                *(sys.executable, "-m", "loyalnet_cli", "admin"),
                *("--dir", str(workdir / "coordinator"), "stores", "--json"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert admin.returncode == 0, admin.stderr
        listed = json.loads(admin.stdout)["stores"]
        assert {store["name"] for store in listed} == set(stores)
        for store in listed:
            assert store["online"] and store["health"]["model_version"] == summary["model_version"]
        assert _processes_mentioning(str(workdir))
    finally:
        demo.send_signal(signal.SIGINT)
        demo.wait(timeout=120)
    assert demo.returncode == 0
    # Every process the demo started is gone.
    assert _processes_mentioning(str(workdir)) == []
