"""Training: the current run's progress and per-round metrics, and every run in a table."""

from __future__ import annotations

from datetime import datetime

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Label, ProgressBar, Sparkline, Static

from loyalnet.chain.v1 import chain_pb2
from loyalnet_cli.console.format import (
    age,
    metric_names,
    metrics_line,
    number,
    version_name,
    when,
)
from loyalnet_cli.console.snapshot import ChainSnapshot
from loyalnet_cli.console.views.table import fill, new_table

CHARTED_METRICS = 4
"""Metrics charted for the current run; the runs table lists the rest."""
STATUS_STYLES = {"running": "bold yellow", "completed": "green", "failed": "bold red"}


class MetricChart(Horizontal):
    """One metric over the run's rounds: its name, a sparkline, the last round's value."""

    DEFAULT_CSS = """
    MetricChart { height: 1; }
    MetricChart > .metric-name { width: 20; color: $text-muted; }
    MetricChart > Sparkline { width: 1fr; max-width: 60; }
    MetricChart > .metric-value { width: 12; padding-left: 1; }
    """

    def __init__(self, metric: str, values: list[float]) -> None:
        super().__init__()
        self.metric = metric
        self._values = values

    def compose(self) -> ComposeResult:
        yield Label(Text(self.metric), classes="metric-name")
        yield Sparkline(self._values)
        yield Label(self._last(), classes="metric-value")

    def show(self, values: list[float]) -> None:
        self._values = values
        # A chart mounted a moment ago composes with these values; one already up updates.
        for sparkline in self.query(Sparkline):
            sparkline.data = values
        for label in self.query(".metric-value").results(Label):
            label.update(self._last())

    def _last(self) -> str:
        return number(self._values[-1]) if self._values else ""


class TrainingView(Vertical):
    """The newest running run on top (else the newest run), the runs table below."""

    DEFAULT_CSS = """
    TrainingView #run-heading { height: auto; padding: 0 1; }
    TrainingView ProgressBar { padding: 0 1; height: 1; }
    TrainingView #run-charts { height: auto; padding: 0 1; }
    TrainingView DataTable { height: 1fr; }
    """

    def compose(self) -> ComposeResult:
        yield Static(id="run-heading")
        yield ProgressBar(total=1, show_eta=False, id="run-progress")
        yield Vertical(id="run-charts")
        yield new_table("run", "status", "rounds", "started", "finished", "model", "last round")

    def show(self, snapshot: ChainSnapshot, now: datetime) -> None:
        run = snapshot.current_run()
        self._show_current(run, now)
        fill(
            self.query_one(DataTable),
            [(str(r.run_id), _row(r, now)) for r in sorted(snapshot.runs, key=_newest_first)],
        )

    def _show_current(self, run: chain_pb2.TrainingRun | None, now: datetime) -> None:
        heading = self.query_one("#run-heading", Static)
        progress = self.query_one(ProgressBar)
        progress.display = run is not None
        if run is None:
            heading.update(Text("No training run yet. t starts one.", style="italic"))
            self._chart({})
            return
        text = Text(f"run {run.run_id} ", style="bold")
        text.append(run.status, style=STATUS_STYLES.get(run.status, ""))
        text.append(f" · round {len(run.rounds)} of {run.rounds_planned}")
        text.append(f" · started {age(when(run, 'started_at'), now)}")
        if run.model_version:
            text.append(f" · produced {version_name(run.model_version)}")
        if run.message:
            text.append(f"\n{run.message}", style="dim")
        heading.update(text)
        progress.update(total=max(1, run.rounds_planned), progress=len(run.rounds))
        series: dict[str, list[float]] = {}
        for training_round in sorted(run.rounds, key=lambda r: r.round):
            for name, value in training_round.metrics.items():
                series.setdefault(name, []).append(value)
        self._chart({name: series[name] for name in metric_names(series)[:CHARTED_METRICS]})

    def _chart(self, series: dict[str, list[float]]) -> None:
        box = self.query_one("#run-charts", Vertical)
        charts = list(box.query(MetricChart))
        if [c.metric for c in charts] != list(series):
            box.remove_children()
            charts = [MetricChart(name, values) for name, values in series.items()]
            box.mount_all(charts)
            return
        for chart in charts:
            chart.show(series[chart.metric])


def _newest_first(run: chain_pb2.TrainingRun) -> int:
    return -run.run_id


def _row(run: chain_pb2.TrainingRun, now: datetime) -> list[Text]:
    finished = when(run, "finished_at")
    last = run.rounds[-1].metrics if run.rounds else {}
    return [
        Text(str(run.run_id), justify="right"),
        Text(run.status, style=STATUS_STYLES.get(run.status, "")),
        Text(f"{len(run.rounds)}/{run.rounds_planned}", justify="right"),
        Text(age(when(run, "started_at"), now)),
        Text(age(finished, now) if finished else ""),
        Text(version_name(run.model_version) if run.model_version else ""),
        Text(metrics_line(last)),
    ]
