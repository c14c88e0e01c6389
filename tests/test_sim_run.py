"""`loyalnet sim run` end to end on the quick experiment: real faces, real Ray, real stores.

The default run uses the quick experiment with one round and half its strangers (every
strategy and every store still runs, scored at round 0 and at the end); the slow test runs
``quick.toml`` itself, twice. The run is a real command in its own process group; every
process it leaves behind (Ray's daemons included) is killed by pid and fails the test.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flwr.app import ArrayRecord
from PIL import Image

from coordinator.initial_model import pretrained_backbone
from coordinator.privacy_accountant import privacy_spent
from loyalnet.packed_backbone import BackboneLayout
from loyalnet.update_encoding import encode_float16_delta
from simulations.experiment import load_experiment
from simulations.results import FINAL_METRICS

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "simulations" / "experiments" / "quick.toml"
LOYALNET = Path(sys.executable).parent / "loyalnet"
RATES = ("rank1", "fnir_at_fpir_1e-2", "tar_at_far_1e-2", "tar_at_far_1e-3", "lfw_accuracy")
SMALLER = {"rounds = 2": "rounds = 1", "strangers_per_store = 20": "strangers_per_store = 10"}
"""What the default run changes in quick.toml: a round of training and scoring per strategy
fewer (the slow test runs both rounds)."""


def _ray_pids() -> set[int]:
    """Processes of Ray's (its daemons and workers), by their command lines."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"ray/" in command or b"raylet" in command or command.startswith(b"ray::"):
            found.add(int(entry.name))
    return found


def _loyalnet(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run the CLI in its own session; kill whatever it leaves running, then fail."""
    before = _ray_pids()
    process = subprocess.Popen(
        [str(LOYALNET), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "FLWR_TELEMETRY_ENABLED": "0"},
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    left = _ray_pids() - before
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"loyalnet {' '.join(args)} left Ray processes running: {sorted(left)}"
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def experiment_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """quick.toml with the changes of :data:`SMALLER`."""
    text = QUICK.read_text()
    for old, new in SMALLER.items():
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path = tmp_path_factory.mktemp("experiment") / "quick.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def quick_run(
    tmp_path_factory: pytest.TempPathFactory, experiment_file: Path
) -> Iterator[tuple[Path, str]]:
    """The smaller quick experiment's output folder and the command's stdout."""
    out = tmp_path_factory.mktemp("sim") / "quick"
    done = _loyalnet("sim", "run", str(experiment_file), "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    yield out, done.stdout


@pytest.fixture(scope="module")
def results(quick_run: tuple[Path, str]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((quick_run[0] / "results.json").read_text())
    return data


def test_every_strategy_reports_every_metric_in_range(
    results: dict[str, Any], experiment_file: Path
) -> None:
    """results.json holds, per strategy in the file's order, the metrics the issue names."""
    experiment = load_experiment(experiment_file)
    assert list(results["strategies"]) == list(experiment.strategies)
    for name, strategy in results["strategies"].items():
        final = strategy["final"]
        assert set(FINAL_METRICS) <= set(final), name
        for key in RATES:
            assert 0.0 <= final[key] <= 1.0, (name, key, final[key])
        rounds = [r["round"] for r in strategy["rounds"]]
        expected = [0] if name == "none" else list(range(experiment.rounds + 1))
        assert rounds == expected, name


def test_every_strategy_starts_from_the_pretrained_model(results: dict[str, Any]) -> None:
    """Round 0 is the same model, scored once, for every strategy; and it is a good one."""
    first = [s["rounds"][0] for s in results["strategies"].values()]
    assert all(r == first[0] for r in first)
    assert first[0]["lfw_accuracy"] > 0.97


def test_costs_and_privacy_are_accounted_per_strategy(
    results: dict[str, Any], experiment_file: Path
) -> None:
    """FedAvg moves the backbone down to every store and its change, in float16 (quick.toml's
    update_encoding), back up each round; the baselines move nothing over the network; only the
    DP run spends epsilon, as the accountant says."""
    experiment = load_experiment(experiment_file)
    assert experiment.update_encoding == "float16-delta"
    stores = len(experiment.store_conditions())
    pretrained = pretrained_backbone()
    packed = ArrayRecord(BackboneLayout.of(pretrained).pack(pretrained))
    model_bytes = packed.count_bytes()
    change_bytes = encode_float16_delta(packed, packed).count_bytes()
    assert change_bytes < 0.51 * model_bytes
    final = {name: s["final"] for name, s in results["strategies"].items()}
    for name in ("fedavg", "fedprox", "fedavg-dp"):
        assert final[name]["bytes_per_round"] == stores * (model_bytes + change_bytes), name
        assert final[name]["seconds_per_round"] > 0
    for name in ("none", "local-only", "centralized"):
        assert final[name]["bytes_per_round"] == 0, name
    expected = privacy_spent(experiment.rounds, experiment.privacy.noise_multiplier, 1e-5)
    assert final["fedavg-dp"]["epsilon"] == pytest.approx(expected.epsilon)
    assert all(final[n]["epsilon"] is None for n in final if n != "fedavg-dp")
    assert "pooled" in results["strategies"]["centralized"]["notes"]
    # The embedder, Flower and Ray's driver: hundreds of MB, and a real measurement.
    assert 100 < results["peak_rss_mb"] < 16_000


def test_stores_and_held_out_people_are_recorded(
    results: dict[str, Any], experiment_file: Path
) -> None:
    """The record says which store saw what, and which hard conditions TAR was measured on."""
    experiment = load_experiment(experiment_file)
    assert [s["condition"] for s in results["stores"]] == experiment.store_conditions()
    assert [h["condition"] for h in results["heldout"]] == experiment.hard_conditions()
    assert all(h["photos"] > h["people"] >= 2 for h in results["heldout"])
    last = results["strategies"]["fedavg"]["rounds"][-1]
    assert set(last["stores"]) == {s["store"] for s in results["stores"]}
    assert set(last["tar"]) == set(experiment.hard_conditions())
    # Every store is also measured at the threshold it would itself decide with.
    for metrics in last["stores"].values():
        assert metrics["threshold_set_by"] in (
            "reference",
            "own camera",
            "camera-adjusted reference",
        )
        for key in ("fpir_measured", "fnir_at_operating", "fnir_at_reference"):
            assert 0.0 <= metrics[key] <= 1.0, (key, metrics)
        # Galleries this small leave the reference reliable: the store takes the stricter one.
        assert metrics["fnir_at_operating"] >= metrics["fnir_at_reference"]


def test_report_table_and_plots_are_written(
    quick_run: tuple[Path, str], experiment_file: Path
) -> None:
    """The run prints the table and leaves report.md and two PNG plots; `sim report`
    writes the same report again from results.json."""
    out, stdout = quick_run
    report = (out / "report.md").read_text()
    assert "| strategy | rank-1 |" in report and "| strategy | rank-1 |" in stdout
    assert "## FPIR and FNIR at each store's own threshold" in report
    for name in load_experiment(experiment_file).strategies:
        assert f"| {name} |" in report
    for plot in ("rounds.png", "stores.png"):
        with Image.open(out / plot) as image:
            assert image.format == "PNG" and image.width > 600
    (out / "report.md").unlink()
    again = _loyalnet("sim", "report", str(out), timeout=120)
    assert again.returncode == 0, again.stderr
    assert (out / "report.md").read_text() == report


def test_simulated_stores_are_real_encrypted_store_folders(quick_run: tuple[Path, str]) -> None:
    """Each simulated store is a store folder with its own 0600 key and a sealed gallery."""
    out, _ = quick_run
    folders = sorted((out / "stores").iterdir())
    assert [f.name for f in folders] == ["store-01", "store-02", "store-03"]
    for folder in folders:
        assert (folder / "store.key").stat().st_mode & 0o777 == 0o600
        assert (folder / "gallery.db").stat().st_size > 0


def test_a_second_run_into_the_same_folder_is_refused(quick_run: tuple[Path, str]) -> None:
    """Nothing of an earlier run is overwritten; the user is told what to do."""
    out, _ = quick_run
    done = _loyalnet("sim", "run", str(QUICK), "--out", str(out), timeout=300)
    assert done.returncode == 1
    assert "already holds a simulation" in done.stderr


def test_a_broken_experiment_file_is_one_clear_error(tmp_path: Path) -> None:
    """A typo in the experiment names the key, before any work starts."""
    broken = tmp_path / "broken.toml"
    broken.write_text(QUICK.read_text().replace("rounds = 2", "rounds = 2\nround = 3"))
    done = _loyalnet("sim", "run", str(broken), "--out", str(tmp_path / "out"), timeout=300)
    assert done.returncode == 1
    assert "round" in done.stderr and str(broken) in done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_same_seed_same_numbers(tmp_path: Path) -> None:
    """Two runs of quick.toml itself (both rounds) give the same numbers, timings aside."""
    runs = []
    for folder in ("first", "again"):
        done = _loyalnet("sim", "run", str(QUICK), "--out", str(tmp_path / folder))
        assert done.returncode == 0, done.stderr[-3000:]
        runs.append(json.loads((tmp_path / folder / "results.json").read_text()))
    results, again = runs
    assert list(results["strategies"]) == list(load_experiment(QUICK).strategies)
    for name, strategy in results["strategies"].items():
        for first, second in zip(
            strategy["rounds"], again["strategies"][name]["rounds"], strict=True
        ):
            for key in ("stores", "tar", "lfw_accuracy", "bytes", "epsilon"):
                assert first[key] == second[key], (name, first["round"], key)
