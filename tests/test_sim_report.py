"""The simulation report: Markdown tables from a hand-made results.json, the two PNGs, errors."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from simulations.report import render_report, write_report
from simulations.results import (
    ResultsError,
    RoundResult,
    SimulationResults,
    StoreMetrics,
    StrategyResult,
)

STORES = ("s1", "s2", "s3")
CONDITIONS = {"s1": "bright", "s2": "dim", "s3": "motion-blur"}
MEMBERS = {"s1": 10, "s2": 12, "s3": 8}
HELDOUT = ("frontal", "low-light")


def _round(
    number: int,
    rank1: tuple[float, float, float],
    fnir: tuple[float, float, float],
    tar: tuple[float, float, float, float],
    lfw: float | None = None,
) -> RoundResult:
    """``tar``: TAR at 1e-2 and 1e-3 for the first held-out condition, then for the second."""
    return RoundResult(
        round=number,
        stores={s: StoreMetrics(r, f) for s, r, f in zip(STORES, rank1, fnir, strict=True)},
        tar={c: {"1e-2": tar[2 * i], "1e-3": tar[2 * i + 1]} for i, c in enumerate(HELDOUT)},
        lfw_accuracy=lfw,
    )


def _costing(rounds: list[RoundResult], sent: int, seconds: float) -> list[RoundResult]:
    """``rounds`` with every trained round moving ``sent`` bytes in ``seconds``."""
    return [
        dataclasses.replace(r, bytes=sent, seconds=seconds) if r.round > 0 else r for r in rounds
    ]


PRETRAINED = _round(0, (0.50, 0.40, 0.30), (0.60, 0.70, 0.80), (0.70, 0.50, 0.50, 0.30), 0.9935)


def _results() -> SimulationResults:
    fedavg = [
        PRETRAINED,
        _round(1, (0.60, 0.50, 0.40), (0.50, 0.60, 0.70), (0.75, 0.55, 0.60, 0.40)),
        _round(2, (0.70, 0.60, 0.55), (0.40, 0.45, 0.55), (0.80, 0.60, 0.70, 0.45)),
        _round(3, (0.81, 0.72, 0.64), (0.25, 0.35, 0.45), (0.86, 0.64, 0.76, 0.52), 0.9912),
    ]
    centralized = [
        PRETRAINED,
        _round(1, (0.80, 0.70, 0.60), (0.30, 0.40, 0.50), (0.90, 0.70, 0.80, 0.60)),
        _round(2, (0.85, 0.75, 0.70), (0.20, 0.30, 0.40), (0.93, 0.73, 0.83, 0.63)),
        _round(3, (0.90, 0.80, 0.75), (0.15, 0.25, 0.35), (0.95, 0.75, 0.85, 0.65), 0.9950),
    ]
    fedavg = _costing(fedavg, 2_400_000, 12.36)
    centralized = _costing(centralized, 0, 30.0)
    return SimulationResults(
        experiment="three-stores",
        seed=7,
        settings={"rounds": 3},
        stores=[{"store": s, "condition": CONDITIONS[s], "members": MEMBERS[s]} for s in STORES],
        heldout=[{"condition": c, "people": 20, "photos": 80} for c in HELDOUT],
        lfw_pairs=2345,
        strategies={
            "none": StrategyResult.summarise("none", [PRETRAINED]),
            "fedavg": StrategyResult.summarise("fedavg", fedavg, "2 of 3 stores\nper round"),
            "centralized": StrategyResult.summarise("centralized", centralized),
        },
        seconds=456.78,
    )


@pytest.fixture
def written(tmp_path: Path) -> tuple[SimulationResults, list[Path]]:
    _results().write(tmp_path)
    # What the report sees is what went through results.json, so expectations use it too.
    return SimulationResults.read(tmp_path), write_report(tmp_path)


def _tables(text: str) -> dict[str, tuple[list[str], dict[str, list[str]]]]:
    """Section heading ("" for the main one) -> (table header, strategy -> cells)."""
    tables: dict[str, tuple[list[str], dict[str, list[str]]]] = {}
    for section in text.split("\n## "):
        heading = "" if section.startswith("# ") else section.splitlines()[0]
        rows = [
            [cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in section.splitlines()
            if line.startswith("|")
        ]
        if rows:
            tables[heading] = (rows[0], {row[0]: row[1:] for row in rows[2:]})
    return tables


def test_write_report_writes_the_three_files(
    written: tuple[SimulationResults, list[Path]], tmp_path: Path
) -> None:
    results, paths = written
    assert paths == [tmp_path / "report.md", tmp_path / "rounds.png", tmp_path / "stores.png"]
    text = paths[0].read_text(encoding="utf-8")
    assert text.startswith("# three-stores (seed 7)\n")
    assert text == render_report(results)
    # Writing again gives the same text: nothing depends on time or dict luck.
    write_report(tmp_path)
    assert paths[0].read_text(encoding="utf-8") == text


def test_main_table_shows_the_final_numbers_formatted(
    written: tuple[SimulationResults, list[Path]],
) -> None:
    results, paths = written
    header, rows = _tables(paths[0].read_text(encoding="utf-8"))[""]
    assert header[0] == "strategy" and "ε" in header and "LFW acc." in header
    assert list(rows) == ["none", "fedavg", "centralized"]  # the experiment's order
    for name, strategy in results.strategies.items():
        final = strategy.final
        lfw = final["lfw_accuracy"]
        assert lfw is not None
        assert rows[name] == [
            f"{final['rank1']:.3f}",
            f"{final['fnir_at_fpir_1e-2']:.3f}",
            f"{final['tar_at_far_1e-2']:.3f}",
            f"{final['tar_at_far_1e-3']:.3f}",
            f"{lfw * 100:.2f}%",
            f"{(final['bytes_per_round'] or 0) / 1e6:.2f}",
            f"{final['seconds_per_round'] or 0:.1f}",
            "–",
        ]
    # The same by hand, so a mistake shared by the fixture and the report still shows.
    assert rows["fedavg"] == ["0.723", "0.350", "0.810", "0.580", "99.12%", "2.40", "12.4", "–"]
    assert rows["none"][4:7] == ["99.35%", "0.00", "0.0"]


def test_epsilon_shows_with_two_decimals_for_a_private_strategy() -> None:
    results = _results()
    fedavg = results.strategies["fedavg"]
    private = [dataclasses.replace(r, epsilon=0.5 * r.round + 0.2345) for r in fedavg.rounds]
    strategies = {**results.strategies, "fedavg-dp": StrategyResult.summarise("fedavg-dp", private)}
    text = render_report(dataclasses.replace(results, strategies=strategies))
    _, rows = _tables(text)[""]
    # The epsilon spent after the last of the 3 rounds: 1.7345.
    assert rows["fedavg-dp"][-1] == "1.73"
    assert rows["fedavg"][-1] == "–"
    assert list(_tables(text)["Gain recovered"][1]) == ["fedavg", "fedavg-dp"]


def test_gain_recovered_is_the_share_of_the_centralized_gain(
    written: tuple[SimulationResults, list[Path]],
) -> None:
    results, paths = written
    text = paths[0].read_text(encoding="utf-8")
    header, rows = _tables(text)["Gain recovered"]
    assert len(header) == 6
    # Only the strategies between the two bounds get a row.
    assert list(rows) == ["fedavg"]
    none, central, fedavg = (results.strategies[s].final for s in ("none", "centralized", "fedavg"))
    trained = [r for r in results.strategies["centralized"].rounds if r.round > 0]
    expected = []
    for key, best in (
        ("tar_at_far_1e-2", max(r.tar_at("1e-2") for r in trained)),
        ("tar_at_far_1e-3", max(r.tar_at("1e-3") for r in trained)),
    ):
        x, lo, hi = fedavg[key], none[key], central[key]
        assert x is not None and lo is not None and hi is not None
        expected.insert(len(expected) // 2, f"{100 * (x - lo) / (hi - lo):.1f}%")
        expected.append(f"{100 * (x - lo) / (best - lo):.1f}%")
    lfw, lfw_none = fedavg["lfw_accuracy"], none["lfw_accuracy"]
    assert lfw is not None and lfw_none is not None
    expected.append(f"{100 * (lfw - lfw_none):+.2f} pp")
    assert rows["fedavg"] == expected
    # (0.81 - 0.60) / (0.90 - 0.60) and (0.58 - 0.40) / (0.70 - 0.40); LFW 99.12% - 99.35%.
    assert expected[:2] + expected[-1:] == ["70.0%", "60.0%", "-0.23 pp"]
    assert "(centralized − none)" in text and "best round" in text


def test_gain_recovered_is_na_when_centralized_gained_nothing(tmp_path: Path) -> None:
    results = _results()
    # Pooling all data left TAR at 1e-2 where it was and made TAR at 1e-3 worse.
    flat = _round(1, (0.6, 0.5, 0.4), (0.5, 0.6, 0.7), (0.70, 0.45, 0.50, 0.25), 0.99)
    strategies = dict(results.strategies)
    strategies["centralized"] = StrategyResult.summarise("centralized", [PRETRAINED, flat])
    dataclasses.replace(results, strategies=strategies).write(tmp_path)
    text = write_report(tmp_path)[0].read_text(encoding="utf-8")
    _, rows = _tables(text)["Gain recovered"]
    assert rows["fedavg"][:4] == ["n/a (centralized gained nothing)"] * 4
    assert rows["fedavg"][4] == "-0.23 pp"


def test_gain_recovered_needs_both_bounds() -> None:
    results = _results()
    without = {k: v for k, v in results.strategies.items() if k != "centralized"}
    text = render_report(dataclasses.replace(results, strategies=without))
    assert "Gain recovered" not in text
    assert "Gain recovered" in render_report(results)


def test_condition_and_store_tables(written: tuple[SimulationResults, list[Path]]) -> None:
    results, paths = written
    text = paths[0].read_text(encoding="utf-8")
    tables = _tables(text)
    header, rows = tables["TAR per held-out condition"]
    assert header == ["strategy", *HELDOUT]
    for name, strategy in results.strategies.items():
        tar = strategy.rounds[-1].tar
        assert rows[name] == [f"{tar[c]['1e-2']:.3f} / {tar[c]['1e-3']:.3f}" for c in HELDOUT]
    assert rows["fedavg"] == ["0.860 / 0.640", "0.760 / 0.520"]

    header, rows = tables["Rank-1 per store"]
    assert header == ["strategy", *STORES]
    for name, strategy in results.strategies.items():
        stores = strategy.rounds[-1].stores
        assert rows[name] == [f"{stores[s].rank1:.3f}" for s in STORES]
    assert rows["none"] == ["0.500", "0.400", "0.300"]
    for store in STORES:
        assert f"`{store}`: {CONDITIONS[store]}, {MEMBERS[store]} members" in text


def test_footer_names_pairs_time_and_notes(written: tuple[SimulationResults, list[Path]]) -> None:
    _, paths = written
    text = paths[0].read_text(encoding="utf-8")
    assert "LFW pairs used: 2345." in text
    assert "Total wall time: 456.8 s." in text
    # A note stays one bullet even when it was written over two lines; empty notes are left out.
    assert "- **fedavg**: 2 of 3 stores per round" in text
    assert "**none**" not in text and "**centralized**" not in text


def test_a_pipe_in_a_name_does_not_break_the_table() -> None:
    results = _results()
    strategies = {("fed|avg" if k == "fedavg" else k): v for k, v in results.strategies.items()}
    text = render_report(dataclasses.replace(results, strategies=strategies))
    assert "| fed\\|avg | 0.723 |" in text


def test_plots_are_pngs_of_a_sensible_size(written: tuple[SimulationResults, list[Path]]) -> None:
    _, paths = written
    for path in paths[1:]:
        with Image.open(path) as image:
            assert image.format == "PNG"
            width, height = image.size
            assert 800 <= width <= 4000 and 600 <= height <= 4000
            # Lines, bars and text, not a blank canvas.
            colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
            assert colours is not None and len(colours) > 50


def test_plotting_leaves_pyplot_alone(tmp_path: Path) -> None:
    _results().write(tmp_path)
    # A fresh interpreter: another test may have imported pyplot into this one.
    script = (
        "import sys; from pathlib import Path; from simulations.report import write_report; "
        f"write_report(Path({str(tmp_path)!r})); "
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr


def test_a_missing_folder_names_the_command_that_makes_results(tmp_path: Path) -> None:
    missing = tmp_path / "never-ran"
    with pytest.raises(ResultsError, match="loyalnet sim run"):
        SimulationResults.read(missing)
    with pytest.raises(ResultsError, match="loyalnet sim run"):
        write_report(missing)
    assert not missing.exists()
