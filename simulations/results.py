"""What a simulation measured, as written to ``<out>/results.json``.

One :class:`StrategyResult` per strategy of the experiment, each a list of :class:`RoundResult`
(round 0 is the model the strategy starts from, the pretrained one) and the final numbers under
the names :data:`FINAL_METRICS`. Every rate is a fraction in [0, 1]; ``None`` means "not
measured" (e.g. LFW accuracy in rounds where it was skipped, epsilon without DP).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loyalnet.errors import LoyalnetError

RESULTS_FILE = "results.json"

FINAL_METRICS = (
    "rank1",
    "fnir_at_fpir_1e-2",
    "tar_at_far_1e-2",
    "tar_at_far_1e-3",
    "lfw_accuracy",
    "bytes_per_round",
    "seconds_per_round",
    "epsilon",
)
"""The keys of :attr:`StrategyResult.final`, in the order tables show them."""


class ResultsError(LoyalnetError):
    """A results file is missing or not one this version wrote."""


@dataclass(frozen=True)
class StoreMetrics:
    """One store's recognition of its own members under one model.

    Attributes:
        rank1: fraction of held-out member photos whose best gallery match is the right member.
        fnir_at_fpir_1e-2: at the threshold where 1% of stranger photos match someone, the
            fraction of member photos not matched to the right member (missed or wrong).
        operating_threshold: the threshold the store itself would decide with for the
            experiment's target FPIR (``store_node.threshold``); None when not measured.
        threshold_set_by: which threshold set it: "reference", "own camera" or
            "camera-adjusted reference" (``store_node.threshold``).
        fpir_measured: the share of the store's strangers accepted at that threshold.
        fnir_at_operating: the share of member photos not matched to the right member there.
        fnir_at_reference: the same at the reference threshold alone (clean-photo strangers),
            the threshold stores used before their own camera counted: the FNIR the own
            threshold costs is the difference.
    """

    rank1: float
    fnir_at_fpir: float
    operating_threshold: float | None = None
    threshold_set_by: str = ""
    fpir_measured: float | None = None
    fnir_at_operating: float | None = None
    fnir_at_reference: float | None = None


@dataclass(frozen=True)
class RoundResult:
    """The model after ``round`` rounds (0: before any training).

    Attributes:
        round: 0 .. the experiment's rounds.
        stores: store id -> that store's metrics (a local-only run uses each store's own model).
        tar: held-out condition -> {"1e-2": TAR, "1e-3": TAR} on people no store trained on;
            empty in rounds that did not measure it (local-only measures it at round 0 and
            the last round only).
        lfw_accuracy: mean 10-fold accuracy on the View 2 pairs left after removing trained
            people, or None when not measured this round.
        bytes: bytes moved between coordinator and stores this round, both directions, all
            stores (0 for round 0 and for strategies that send nothing).
        seconds: wall time of the round's training (without evaluation).
        epsilon: DP epsilon spent up to this round at the experiment's delta, or None.
    """

    round: int
    stores: dict[str, StoreMetrics]
    tar: dict[str, dict[str, float]]
    lfw_accuracy: float | None = None
    bytes: int = 0
    seconds: float = 0.0
    epsilon: float | None = None

    def rank1(self) -> float:
        """Mean rank-1 over the stores."""
        return _mean([m.rank1 for m in self.stores.values()])

    def fnir(self) -> float:
        """Mean FNIR at FPIR 1e-2 over the stores."""
        return _mean([m.fnir_at_fpir for m in self.stores.values()])

    def tar_at(self, far: str) -> float:
        """Mean TAR at ``far`` ("1e-2" or "1e-3") over the held-out conditions."""
        return _mean([values[far] for values in self.tar.values()])


@dataclass(frozen=True)
class StrategyResult:
    """One strategy's run of the experiment."""

    strategy: str
    rounds: list[RoundResult]
    final: dict[str, float | None] = field(default_factory=dict)
    notes: str = ""

    @classmethod
    def summarise(cls, strategy: str, rounds: list[RoundResult], notes: str = "") -> StrategyResult:
        """Fill :attr:`final` from the last round and the per-round costs."""
        last = rounds[-1]
        trained = [r for r in rounds if r.round > 0]
        lfw = next((r.lfw_accuracy for r in reversed(rounds) if r.lfw_accuracy is not None), None)
        final: dict[str, float | None] = {
            "rank1": last.rank1(),
            "fnir_at_fpir_1e-2": last.fnir(),
            "tar_at_far_1e-2": last.tar_at("1e-2"),
            "tar_at_far_1e-3": last.tar_at("1e-3"),
            "lfw_accuracy": lfw,
            "bytes_per_round": _mean([float(r.bytes) for r in trained]) if trained else 0.0,
            "seconds_per_round": _mean([r.seconds for r in trained]) if trained else 0.0,
            "epsilon": last.epsilon,
        }
        return cls(strategy, rounds, final, notes)


@dataclass(frozen=True)
class SimulationResults:
    """Everything ``loyalnet sim run`` measured.

    Attributes:
        experiment: the experiment's name.
        seed: its seed.
        settings: the experiment as read from its file (for the record).
        stores: per store: id, condition, source, members, enrolment crops, probes, strangers.
        heldout: per held-out condition: people and photos used for TAR.
        lfw_pairs: View 2 pairs used for ``lfw_accuracy`` (those without trained people).
        strategies: strategy name -> its result, in the experiment's order.
        seconds: wall time of the whole simulation.
        peak_rss_mb: the simulation process's peak resident memory (the simulated stores' Ray
            workers are separate processes, as many as there are CPUs, not stores).
    """

    experiment: str
    seed: int
    settings: dict[str, Any]
    stores: list[dict[str, Any]]
    heldout: list[dict[str, Any]]
    lfw_pairs: int
    strategies: dict[str, StrategyResult]
    seconds: float = 0.0
    peak_rss_mb: float = 0.0

    def write(self, folder: Path) -> Path:
        """Write ``folder/results.json`` (replacing it) and return its path."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / RESULTS_FILE
        text = json.dumps(asdict(self), indent=2, sort_keys=False, allow_nan=False)
        path.write_text(text + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, folder: Path) -> SimulationResults:
        """Read ``folder/results.json``.

        Raises:
            ResultsError: no such file, or not a results file of this version.
        """
        path = folder / RESULTS_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            strategies = {
                name: StrategyResult(
                    strategy=value["strategy"],
                    rounds=[_round(r) for r in value["rounds"]],
                    final=dict(value["final"]),
                    notes=value.get("notes", ""),
                )
                for name, value in data["strategies"].items()
            }
            return cls(
                experiment=data["experiment"],
                seed=int(data["seed"]),
                settings=dict(data["settings"]),
                stores=list(data["stores"]),
                heldout=list(data["heldout"]),
                lfw_pairs=int(data["lfw_pairs"]),
                strategies=strategies,
                seconds=float(data.get("seconds", 0.0)),
                peak_rss_mb=float(data.get("peak_rss_mb", 0.0)),
            )
        except FileNotFoundError:
            raise ResultsError(
                f"{path} does not exist; run `loyalnet sim run EXPERIMENT.toml --out {folder}` "
                "first."
            ) from None
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise ResultsError(
                f"{path} is not a results file of this loyalnet version ({err}); run the "
                "experiment again."
            ) from None


def _round(data: dict[str, Any]) -> RoundResult:
    return RoundResult(
        round=int(data["round"]),
        stores={k: StoreMetrics(**v) for k, v in data["stores"].items()},
        tar={k: dict(v) for k, v in data["tar"].items()},
        lfw_accuracy=data.get("lfw_accuracy"),
        bytes=int(data.get("bytes", 0)),
        seconds=float(data.get("seconds", 0.0)),
        epsilon=data.get("epsilon"),
    )


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0
