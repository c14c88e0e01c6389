"""``loyalnet bench control-plane``: small real runs, a real coordinator and real TLS.

The numbers of a 20-store run say nothing about scale; what is checked is that a run yields
every field with sane values, that every process it started is gone afterwards, and that its
temporary folder and PostgreSQL database are removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import URL

from coordinator.control_plane_bench import (
    BenchError,
    BenchSettings,
    IssueJob,
    _Children,
    _percentile_ms,
    run_control_plane_bench,
)
from coordinator.pki import create_coordinator_tls

FIELDS = {
    "stores",
    "seconds",
    "interval_seconds",
    "database",
    "heartbeats_per_second",
    "expected_heartbeats_per_second",
    "p50_ms",
    "p99_ms",
    "max_ms",
    "errors",
    "coordinator_cpu_percent",
    "coordinator_peak_rss_mb",
    "client_processes",
    "setup_seconds",
}


def _children(pid: int) -> set[int]:
    """Processes whose parent is ``pid``, zombies included (a child never waited for)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it ended while we looked
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def _check_sane(record: dict[str, object], stores: int, interval: int) -> None:
    assert record.keys() >= FIELDS
    assert record["stores"] == stores and record["interval_seconds"] == interval
    expected = stores / interval
    assert record["expected_heartbeats_per_second"] == expected
    rate = record["heartbeats_per_second"]
    assert isinstance(rate, float) and 0.75 * expected <= rate <= expected
    assert record["errors"] == 0 and record["connect_failures"] == 0, record
    p50, p99, most = record["p50_ms"], record["p99_ms"], record["max_ms"]
    assert isinstance(p50, float) and isinstance(p99, float) and isinstance(most, float)
    assert 0 < p50 <= p99 <= most < 5000
    cpu = record["coordinator_cpu_percent"]
    assert isinstance(cpu, float) and 0 < cpu <= 100 * (os.cpu_count() or 1)
    peak = record["coordinator_peak_rss_mb"]
    assert isinstance(peak, float) and peak > 10
    setup = record["setup_seconds"]
    assert isinstance(setup, float) and setup > 0


def test_a_small_run_measures_and_leaves_nothing_behind(tmp_path: Path) -> None:
    before = _children(os.getpid())
    result = run_control_plane_bench(
        BenchSettings(stores=20, seconds=4, interval_seconds=1, clients=2), work_root=tmp_path
    )
    record = result.as_json()
    json.dumps(record)
    _check_sane(record, 20, 1)
    assert record["database"] == "sqlite" and record["client_processes"] == 2

    # The coordinator and both agents ran, and were stopped and waited for.
    assert len(result.processes) == 3
    assert not [pid for pid in result.processes if Path(f"/proc/{pid}").exists()]
    assert _children(os.getpid()) <= before
    assert list(tmp_path.iterdir()) == []


def _bench_databases(server: URL) -> set[str]:
    conninfo = psycopg.conninfo.make_conninfo(
        "",
        host=server.host,
        port=server.port,
        user=server.username,
        password=server.password,
        dbname=server.database,
    )
    with psycopg.connect(conninfo, autocommit=True) as connection:
        rows = connection.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'loyalnet_bench_%'"
        ).fetchall()
    return {row[0] for row in rows}


def test_the_command_prints_json_only_and_drops_its_database(
    tmp_path: Path, postgres_server_url: URL
) -> None:
    databases = _bench_databases(postgres_server_url)
    server = postgres_server_url.render_as_string(hide_password=False)
    command = [sys.executable, "-m", "loyalnet_cli", "bench", "control-plane", "--stores", "6"]
    command += ["--seconds", "3", "--interval", "1", "--clients", "1", "--json"]
    command += ["--database", "postgresql", "--postgres-server", server]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    _check_sane(record, 6, 1)
    assert record["database"] == "postgresql" and record["client_processes"] == 1
    assert _bench_databases(postgres_server_url) <= databases
    assert list(tmp_path.iterdir()) == []


def test_settings_outside_what_is_measured_are_refused() -> None:
    for wrong in (
        BenchSettings(stores=0),
        BenchSettings(stores=1_000_000),
        BenchSettings(clients=0),
        BenchSettings(interval_seconds=0),
        BenchSettings(seconds=0.5),
    ):
        with pytest.raises(BenchError):
            run_control_plane_bench(wrong)


def test_percentiles_are_nearest_rank() -> None:
    seconds = [i / 1000 for i in range(1, 101)]  # 1 ms .. 100 ms
    assert _percentile_ms(seconds, 0.5) == pytest.approx(50.0)
    assert _percentile_ms(seconds, 0.99) == pytest.approx(99.0)
    assert _percentile_ms(seconds, 1.0) == pytest.approx(100.0)
    assert _percentile_ms([0.004], 0.99) == pytest.approx(4.0)


def test_a_child_that_finished_early_is_not_taken_for_a_dead_one(tmp_path: Path) -> None:
    # One key maker is done (and gone) long before the other: its closed pipe is no failure.
    tls = create_coordinator_tls(tmp_path / "tls", "test chain")
    jobs = [
        IssueJob(str(tls.folder), ("early",)),
        IssueJob(str(tls.folder), tuple(f"late-{i}" for i in range(120))),
    ]
    made: list[str] = []
    with contextlib.ExitStack() as cleanup:
        makers = _Children.spawn(jobs, tmp_path, "keys", cleanup)
        give_up = time.monotonic() + 120
        while len(makers.finished) < len(jobs):
            for index, message in makers.messages(give_up, "keys"):
                if message[0] == "finished":
                    makers.finished.add(index)
                else:
                    made.extend(issued.identity.name for issued in message[1])
    assert sorted(made) == sorted(["early", *jobs[1].names])
    assert all(process.returncode == 0 for process in makers.processes)
