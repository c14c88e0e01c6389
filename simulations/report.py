"""A Markdown report and two PNG plots of a simulation's ``results.json``.

``report.md`` holds, in this order:

1. the main table, one row per strategy in the experiment's order, with the final-round numbers
   of :data:`~simulations.results.FINAL_METRICS`: rank-1, FNIR at FPIR 1e-2 and TAR at FAR
   1e-2 / 1e-3 as fractions, LFW accuracy as a percentage, the traffic per round in MB
   (10^6 bytes, both directions, all stores), the training seconds per round and the DP epsilon;
2. "gain recovered", when the experiment ran both ``none`` (the pretrained model) and
   ``centralized`` (all stores' data pooled, the upper bound): against centralized's last
   round, and against its best round for each TAR (picked on the test people: optimistic);
3. TAR per held-out condition;
4. rank-1 per store, with each store's camera condition;
5. a footer: LFW pairs used, the total wall time, and the strategies' notes.

Reading "gain recovered": for a metric ``m``, ``(m(strategy) - m(none)) / (m(centralized) -
m(none))`` is the share of what pooling all data gains over the pretrained model that the
strategy gains without pooling. 100% matches centralized training, 0% is no better than the
pretrained model, a negative share is worse than it, and over 100% beats centralized training.
When centralized training gained nothing (or lost), the ratio means nothing and the report says
"n/a". The LFW column is the change in LFW accuracy against the pretrained model in percentage
points: fine-tuning on a few stores' members may cost general verification accuracy.

``rounds.png`` draws rank-1, FNIR and both TARs per round for every strategy; ``stores.png`` the
final rank-1 and FNIR per store as grouped bars.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from simulations.results import RoundResult, SimulationResults, StoreMetrics, StrategyResult

REPORT_FILE = "report.md"
ROUNDS_PLOT = "rounds.png"
STORES_PLOT = "stores.png"

BASELINE = "none"
UPPER_BOUND = "centralized"

DPI = 120
MISSING = "–"

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def render_report(results: SimulationResults) -> str:
    """The Markdown report of ``results`` (see the module docstring for its sections).

    Rates are fractions with 3 decimals, LFW accuracy a percentage, traffic in MB (10^6 bytes)
    per round, time in seconds; a value that was not measured shows as "–".
    """
    parts = [
        f"# {results.experiment} (seed {results.seed})",
        _main_table(results),
        _gain_section(results),
        _condition_table(results),
        _store_table(results),
        _operating_table(results),
        _footer(results),
    ]
    return "\n\n".join(part for part in parts if part) + "\n"


def plot_rounds(results: SimulationResults, path: Path) -> Path:
    """Write a 2x2 PNG of rank-1, FNIR @ FPIR 1e-2, TAR @ FAR 1e-2 and 1e-3 per round.

    Every value is a fraction in [0, 1]. A strategy with a single round (the pretrained model)
    is a dashed horizontal line over the rounds the others span. Returns ``path``.
    """
    panels: list[tuple[str, Callable[[RoundResult], float | None]]] = [
        ("rank-1", RoundResult.rank1),
        ("FNIR @ FPIR 1e-2", RoundResult.fnir),
        # Rounds that did not measure TAR (local-only, between its first and last) are skipped.
        ("TAR @ FAR 1e-2", lambda r: r.tar_at("1e-2") if r.tar else None),
        ("TAR @ FAR 1e-3", lambda r: r.tar_at("1e-3") if r.tar else None),
    ]
    numbers = [r.round for s in results.strategies.values() for r in s.rounds]
    first, last = (min(numbers), max(numbers)) if numbers else (0, 0)

    fig = _figure(11.0, 8.5)
    for index, (label, metric) in enumerate(panels):
        ax = fig.add_subplot(2, 2, index + 1)
        for position, (name, strategy) in enumerate(results.strategies.items()):
            color = _color(position)
            points = [(r.round, metric(r)) for r in strategy.rounds]
            measured = [(x, y) for x, y in points if y is not None]
            if len(strategy.rounds) == 1 and measured:
                value = measured[0][1]
                ax.plot([first, last], [value, value], linestyle="--", color=color, label=name)
            elif measured:
                xs = [x for x, _ in measured]
                ys = [y for _, y in measured]
                marker = _MARKERS[position % len(_MARKERS)]
                ax.plot(xs, ys, marker=marker, color=color, label=name)
        ax.set_title(label)
        ax.set_xlabel("round")
        ax.set_ylabel(f"{label} (fraction)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    _legend(fig)
    fig.suptitle(f"{results.experiment} (seed {results.seed}): metrics per round")
    return _save(fig, path)


def plot_stores(results: SimulationResults, path: Path) -> Path:
    """Write a PNG of each store's final rank-1 (top) and FNIR @ FPIR 1e-2 (bottom).

    Both are fractions in [0, 1]; bars are grouped by store, one per strategy, from each
    strategy's last round. Returns ``path``.
    """
    stores = _store_ids(results)
    conditions = _store_conditions(results)
    labels = [f"{store}\n{conditions.get(store, '?')}" for store in stores]
    count = max(len(results.strategies), 1)
    # The groups share 80% of a unit slot so neighbouring stores stay apart.
    width = 0.8 / count

    fig = _figure(max(8.0, 1.4 * len(stores) + 3.0), 8.5)
    panels: list[tuple[str, Callable[[StoreMetrics], float]]] = [
        ("rank-1", lambda m: m.rank1),
        ("FNIR @ FPIR 1e-2", lambda m: m.fnir_at_fpir),
    ]
    for index, (label, metric) in enumerate(panels):
        ax = fig.add_subplot(2, 1, index + 1)
        for position, (name, strategy) in enumerate(results.strategies.items()):
            final = strategy.rounds[-1].stores if strategy.rounds else {}
            xs = [i - 0.4 + width * (position + 0.5) for i, s in enumerate(stores) if s in final]
            heights = [metric(final[s]) for s in stores if s in final]
            ax.bar(xs, heights, width=width, label=name, color=_color(position))
        ax.set_xticks(range(len(stores)), labels)
        ax.set_ylim(0.0, 1.0)
        ax.set_ylabel(f"{label} (fraction)")
        ax.set_title(f"final {label} per store")
        ax.grid(True, axis="y", alpha=0.3)
    _legend(fig)
    fig.suptitle(f"{results.experiment} (seed {results.seed}): stores")
    return _save(fig, path)


def write_report(folder: Path) -> list[Path]:
    """Read ``folder/results.json`` and write ``report.md``, ``rounds.png`` and ``stores.png``.

    Returns the three paths in that order.

    Raises:
        ResultsError: ``folder`` holds no results file of this version.
    """
    results = SimulationResults.read(folder)
    report = folder / REPORT_FILE
    report.write_text(render_report(results), encoding="utf-8")
    return [
        report,
        plot_rounds(results, folder / ROUNDS_PLOT),
        plot_stores(results, folder / STORES_PLOT),
    ]


# --- Markdown sections -------------------------------------------------------------------------


def _main_table(results: SimulationResults) -> str:
    header = [
        "strategy",
        "rank-1",
        "FNIR @ FPIR=1e-2",
        "TAR @ FAR=1e-2",
        "TAR @ FAR=1e-3",
        "LFW acc.",
        "MB / round",
        "s / round",
        "ε",
    ]
    rows = []
    for name, strategy in results.strategies.items():
        final = strategy.final
        rows.append(
            [
                name,
                _rate(final.get("rank1")),
                _rate(final.get("fnir_at_fpir_1e-2")),
                _rate(final.get("tar_at_far_1e-2")),
                _rate(final.get("tar_at_far_1e-3")),
                _percent(final.get("lfw_accuracy")),
                _number(_scaled(final.get("bytes_per_round"), 1e-6), 2),
                _number(final.get("seconds_per_round"), 1),
                _number(final.get("epsilon"), 2),
            ]
        )
    return _table(header, rows)


def _gain_section(results: SimulationResults) -> str:
    strategies = results.strategies
    if BASELINE not in strategies or UPPER_BOUND not in strategies:
        return ""
    none, central = strategies[BASELINE].final, strategies[UPPER_BOUND].final
    lines = [
        "## Gain recovered",
        "",
        f"Share of the gain of `{UPPER_BOUND}` (all data pooled) over `{BASELINE}` (the "
        "pretrained model) that each strategy achieves: (strategy − none) / (centralized − "
        "none). 100% matches centralized training, 0% is no better than the pretrained model. "
        "LFW Δ is the change in LFW accuracy against the pretrained model in percentage points.",
        "",
    ]
    others = [name for name in strategies if name not in (BASELINE, UPPER_BOUND)]
    if not others:
        lines.append(f"No strategy besides `{BASELINE}` and `{UPPER_BOUND}` ran.")
        return "\n".join(lines)
    best = _best_rounds(strategies[UPPER_BOUND])
    rows = []
    for name in others:
        final = strategies[name].final
        row = [name]
        for key in ("tar_at_far_1e-2", "tar_at_far_1e-3"):
            row.append(_recovered(final.get(key), none.get(key), central.get(key)))
        for key, (_, value) in best.items():
            row.append(_recovered(final.get(key), none.get(key), value))
        row.append(_points(final.get("lfw_accuracy"), none.get("lfw_accuracy")))
        rows.append(row)
    header = ["strategy", "TAR @ FAR=1e-2 recovered", "TAR @ FAR=1e-3 recovered"]
    header += [f"{_TAR_LABELS[key]} vs. best round" for key in best]
    header.append("LFW Δ")
    lines.append(_table(header, rows))
    if best:
        picked = ", ".join(f"{_TAR_LABELS[key]}: round {n}" for key, (n, _) in best.items())
        lines += [
            "",
            f'"vs. best round" compares with `{UPPER_BOUND}` at its best round instead of its '
            f"last ({picked}): picked on the held-out people themselves, so an optimistic upper "
            "bound, shown because a few dozen people make the last round's TAR noisy.",
        ]
    return "\n".join(lines)


_TAR_LABELS = {"tar_at_far_1e-2": "TAR @ 1e-2", "tar_at_far_1e-3": "TAR @ 1e-3"}


def _best_rounds(strategy: StrategyResult) -> dict[str, tuple[int, float]]:
    """Per TAR metric, the round (after round 0) with the highest value and that value."""
    measured = [r for r in strategy.rounds if r.round > 0 and r.tar]
    if not measured:
        return {}
    best = {}
    for key, far in (("tar_at_far_1e-2", "1e-2"), ("tar_at_far_1e-3", "1e-3")):
        top = max(measured, key=lambda r: (r.tar_at(far), -r.round))
        best[key] = (top.round, top.tar_at(far))
    return best


def _condition_table(results: SimulationResults) -> str:
    conditions = _ordered(
        key for s in results.strategies.values() if s.rounds for key in s.rounds[-1].tar
    )
    rows = []
    for name, strategy in results.strategies.items():
        tar = strategy.rounds[-1].tar if strategy.rounds else {}
        cells = [
            f"{_rate(tar[c].get('1e-2'))} / {_rate(tar[c].get('1e-3'))}" if c in tar else MISSING
            for c in conditions
        ]
        rows.append([name, *cells])
    return "\n".join(
        [
            "## TAR per held-out condition",
            "",
            "Each cell: TAR @ FAR=1e-2 / TAR @ FAR=1e-3 on people no store trained on.",
            "",
            _table(["strategy", *conditions], rows),
        ]
    )


def _store_table(results: SimulationResults) -> str:
    stores = _store_ids(results)
    described = []
    for store in results.stores:
        members = store.get("members")
        count = f", {members} members" if members is not None else ""
        described.append(f"`{store.get('store')}`: {store.get('condition', '?')}{count}")
    rows = []
    for name, strategy in results.strategies.items():
        final = strategy.rounds[-1].stores if strategy.rounds else {}
        rows.append([name, *(_rate(final[s].rank1) if s in final else MISSING for s in stores)])
    return "\n".join(
        [
            "## Rank-1 per store",
            "",
            ("Stores: " + "; ".join(described) + ".") if described else "Stores: none listed.",
            "",
            _table(["strategy", *stores], rows),
        ]
    )


_SET_BY_MARK = {"own camera": "*", "camera-adjusted reference": "+"}


def _operating_table(results: SimulationResults) -> str:
    """Per store: FPIR measured at the store's own threshold against the target, and FNIR."""
    stores = _store_ids(results)
    target = results.settings.get("evaluation", {}).get("fpir")
    rows = []
    for name, strategy in results.strategies.items():
        final = strategy.rounds[-1].stores if strategy.rounds else {}
        cells = []
        for store in stores:
            metrics = final.get(store)
            if metrics is None or metrics.fpir_measured is None:
                cells.append(MISSING)
                continue
            own = _SET_BY_MARK.get(metrics.threshold_set_by, "")
            extra = ""
            if metrics.fnir_at_reference is not None and metrics.fnir_at_operating is not None:
                extra = f" ({100 * (metrics.fnir_at_operating - metrics.fnir_at_reference):+.1f})"
            cells.append(
                f"{metrics.fpir_measured:.3f} / {_rate(metrics.fnir_at_operating)}{extra}{own}"
            )
        rows.append([name, *cells])
    if all(cell == MISSING for row in rows for cell in row[1:]):
        return ""
    goal = f" (target {target:g})" if isinstance(target, float) else ""
    return "\n".join(
        [
            "## FPIR and FNIR at each store's own threshold",
            "",
            f"Each cell: the share of the store's strangers accepted{goal} / the share of its "
            "members' photos not matched to the right member, at the threshold the store itself "
            "decides with (`store_node.threshold`); in brackets, the points of FNIR that "
            "threshold costs against the reference threshold alone. `*`: the store's own "
            "members, seen through its camera, set the threshold; `+`: the reference shifted "
            "by how much higher the own members' impostor scores lie did; otherwise the "
            "reference strangers on clean photos did.",
            "",
            _table(["strategy", *stores], rows),
        ]
    )


def _footer(results: SimulationResults) -> str:
    memory = (
        f" Peak memory of the simulation process: {results.peak_rss_mb:.0f} MB."
        if results.peak_rss_mb
        else ""
    )
    lines = [
        f"LFW pairs used: {results.lfw_pairs}. Total wall time: {results.seconds:.1f} s.{memory}",
    ]
    # Notes may span lines; a bullet must stay on one.
    notes = [(name, " ".join(s.notes.split())) for name, s in results.strategies.items()]
    notes = [(name, text) for name, text in notes if text]
    if notes:
        lines += ["", "Notes:", ""]
        lines += [f"- **{name}**: {text}" for name, text in notes]
    return "\n".join(lines)


# --- formatting --------------------------------------------------------------------------------


def _table(header: list[str], rows: list[list[str]]) -> str:
    # Numbers right-aligned, the first column (names) left-aligned.
    align = [":---"] + ["---:"] * (len(header) - 1)
    lines = [_row(header), _row(align)]
    lines += [_row(row) for row in rows]
    return "\n".join(lines)


def _row(cells: list[str]) -> str:
    # A pipe inside a cell would end it early on GitHub.
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def _rate(value: float | None) -> str:
    return MISSING if value is None else f"{value:.3f}"


def _percent(value: float | None) -> str:
    return MISSING if value is None else f"{value * 100:.2f}%"


def _number(value: float | None, decimals: int) -> str:
    return MISSING if value is None else f"{value:.{decimals}f}"


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def _recovered(value: float | None, none: float | None, central: float | None) -> str:
    if value is None or none is None or central is None:
        return MISSING
    gain = central - none
    if gain <= 0:
        return "n/a (centralized gained nothing)"
    return f"{_unsigned_zero(100 * (value - none) / gain, 1):.1f}%"


def _points(value: float | None, none: float | None) -> str:
    if value is None or none is None:
        return MISSING
    return f"{_unsigned_zero(100 * (value - none), 2):+.2f} pp"


def _unsigned_zero(value: float, decimals: int) -> float:
    # Rounding first and adding 0.0 turns -0.0 into 0.0, so a tiny loss does not print "-0.00".
    return round(value, decimals) + 0.0


# --- shared helpers ----------------------------------------------------------------------------


def _ordered(keys: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(keys))


def _store_ids(results: SimulationResults) -> list[str]:
    return _ordered(
        key for s in results.strategies.values() if s.rounds for key in s.rounds[-1].stores
    )


def _store_conditions(results: SimulationResults) -> dict[str, str]:
    return {str(s.get("store")): str(s.get("condition", "?")) for s in results.stores}


def _color(position: int) -> str:
    # One colour per strategy, the same in both figures.
    return f"C{position % 10}"


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    # An explicit Agg canvas: PNG output without pyplot or any display.
    FigureCanvasAgg(fig)
    return fig


def _legend(fig: Figure) -> None:
    first = fig.axes[0] if fig.axes else None
    if first is None:
        return
    handles, labels = first.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 6))


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


__all__ = [
    "REPORT_FILE",
    "ROUNDS_PLOT",
    "STORES_PLOT",
    "plot_rounds",
    "plot_stores",
    "render_report",
    "write_report",
]
