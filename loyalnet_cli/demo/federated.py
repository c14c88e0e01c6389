"""The federated demo: a chain of three stores fine-tunes the shared face model, no face shared.

Steps, each shown as it runs:

1. three store folders, each with its own gallery and key, enrol their members (consent to
   recognition and model improvement) through their own camera (``loyalnet_cli.demo.stores``);
2. each store's recognition is measured with the pretrained model;
3. the chain starts as real processes on 127.0.0.1 (``loyalnet_cli.demo.chain``): the
   coordinator (control plane and SuperLink) and, per store, ``loyalnet store serve`` and a
   SuperNode; the console can watch it from here on;
4. a training run is started through the control plane, as an admin would, and followed
   round by round; only backbone weights and aggregate metrics travel;
5. the run's model version is promoted: every store downloads it, checks the chain's
   signature, its hash and its own architecture, re-computes its templates from its own
   crops and re-calibrates its threshold, by itself;
6. recognition is measured again.

Everything started is stopped at the end, on an error, or on Ctrl-C; with ``hold`` the chain
keeps running until ``hold`` returns (``loyalnet demo --keep``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coordinator.model_versions import list_model_versions, read_manifest
from loyalnet.errors import LoyalnetError
from loyalnet_cli.demo.chain import DemoChain, RunOutcome
from loyalnet_cli.demo.evaluation import StoreScore, score_store
from loyalnet_cli.demo.stores import DemoPlan, DemoStore, plan_stores
from store_node.config import StoreConfig, StorePaths, TrainingLimits, read_config, write_config
from store_node.enrolment import EnrolmentError, EnrolmentRequest, enrol_member
from store_node.face import FacePipeline
from store_node.gallery import Gallery, Purpose
from store_node.retemplate import recognition_pipeline
from store_node.threshold import DEFAULT_CALIBRATION_PEOPLE, decision_threshold

Step = Callable[[str], None]
Hold = Callable[[DemoChain, dict[str, Any]], None]


@dataclass(frozen=True)
class FederatedDemoOptions:
    """The demo's knobs; the defaults finish within minutes on a 2-core machine."""

    plan: DemoPlan = field(default_factory=DemoPlan)
    rounds: int = 3
    local_epochs: int = 1
    learning_rate: float = 0.001
    strategy: str = "fedavg"
    update_encoding: str = "float16-delta"
    calibration_people: int = DEFAULT_CALIBRATION_PEOPLE
    round_timeout_seconds: float = 600.0
    rollout_timeout_seconds: float = 900.0


@dataclass
class StoreReport:
    """Before and after, for one store."""

    store: DemoStore
    folder: Path
    enrolled: int = 0
    rejected_photos: int = 0
    before: StoreScore | None = None
    after: StoreScore | None = None


def run_federated_demo(
    workdir: Path,
    options: FederatedDemoOptions,
    step: Step,
    threads: int | None = None,
    hold: Hold | None = None,
) -> dict[str, Any]:
    """Run the whole demo in ``workdir`` and return its summary (see ``summary_json``).

    Args:
        hold: called with the running chain and the summary once the demo is done; the chain
            is stopped when it returns (``--keep`` waits there for Ctrl-C).
    """
    step("reading the stores' photos through their cameras")
    stores = plan_stores(options.plan)
    pipeline = FacePipeline.load(threads=threads)
    reports = [StoreReport(store, workdir / "stores" / store.name) for store in stores]
    # The demo's operator runs the stores too: their floor admits the demo's own rounds.
    limits = TrainingLimits.admitting(
        local_epochs=options.local_epochs,
        learning_rate=options.learning_rate,
        min_members=TrainingLimits().min_members,
    )
    for report in reports:
        step(f"{report.store.name}: enrolling {len(report.store.members)} members")
        _enrol_store(report, pipeline, limits)
        step(f"{report.store.name}: measuring recognition with the pretrained model")
        report.before = _score(report, pipeline)
    del pipeline

    names = [report.store.name for report in reports]
    with DemoChain.create(workdir) as chain:
        for report in reports:
            chain.admit(report.store.name, report.folder)
        step("starting the coordinator: control plane and SuperLink, mutual TLS, on 127.0.0.1")
        chain.start_coordinator()
        for report in reports:
            step(f"{report.store.name}: joins the chain; starting `store serve` and a SuperNode")
            chain.join(report.store.name, report.folder, options.calibration_people)
        chain.wait_for_stores(names)
        step(f"the chain runs; watch it with: {chain.console_command}")

        run_id = chain.train(
            options.rounds,
            strategy=options.strategy,
            local_epochs=options.local_epochs,
            learning_rate=options.learning_rate,
            stores=len(reports),
            update_encoding=options.update_encoding,
        )
        outcome = chain.follow(run_id, step, options.rounds * options.round_timeout_seconds + 120.0)
        version = outcome.run.model_version
        step(
            f"promoting model v{version}: each store checks it, re-computes its templates and "
            f"re-calibrates on {options.calibration_people} strangers"
        )
        chain.roll_out(version, names, options.rollout_timeout_seconds)
        # Every store now recognises with v{version}: one pipeline serves to measure them all.
        adopted = recognition_pipeline(reports[0].folder, threads=threads)
        for report in reports:
            step(f"{report.store.name}: measuring recognition with model v{version}")
            report.after = _score(report, adopted)
        saved = [v for v in list_model_versions(chain.home.models_dir) if v.version == version]
        if not saved:
            raise LoyalnetError(f"model v{version} is not in {chain.home.models_dir}.")
        manifest = read_manifest(saved[0])
        summary = summary_json(reports, manifest, outcome, options, version)
        if hold is not None:
            hold(chain, summary)
    return summary


def summary_json(
    reports: list[StoreReport],
    manifest: dict[str, Any],
    outcome: RunOutcome,
    options: FederatedDemoOptions,
    version: int,
) -> dict[str, Any]:
    """The demo's result as plain JSON values (the ``--json`` output)."""
    rounds = manifest["rounds"]
    seconds = [float(metrics.get("round-seconds", 0.0)) for metrics in rounds.values()]
    # The slowest store's local training: what a round cannot be faster than.
    training = [float(metrics.get("train-seconds", 0.0)) for metrics in rounds.values()]
    epsilon = [metrics["epsilon"] for metrics in rounds.values() if "epsilon" in metrics]
    stores: dict[str, Any] = {}
    for report in reports:
        assert report.before is not None and report.after is not None
        stores[report.store.name] = {
            "camera": report.store.camera,
            "members": report.enrolled,
            "rank1_before": round(report.before.rank1, 4),
            "rank1_after": round(report.after.rank1, 4),
            "tar_at_far_1e-2_before": _rounded(report.before.tar_at_far_1e_2),
            "tar_at_far_1e-2_after": _rounded(report.after.tar_at_far_1e_2),
            "strangers": report.before.strangers,
            "strangers_accepted_before": report.before.strangers_accepted,
            "strangers_accepted_after": report.after.strangers_accepted,
            "probes": report.before.probes,
            "target_fpir": report.before.target_fpir,
            "fpir_measured_before": round(report.before.fpir, 4),
            "fpir_measured_after": round(report.after.fpir, 4),
            # 40 strangers cannot show 0.1%: the interval's upper end says how little they can.
            "fpir_interval_before": [round(v, 4) for v in report.before.fpir_interval()],
            "fpir_interval_after": [round(v, 4) for v in report.after.fpir_interval()],
            "threshold_before": round(report.before.threshold, 4),
            "threshold_after": round(report.after.threshold, 4),
            "threshold_set_by_before": report.before.threshold_set_by,
            "threshold_set_by_after": report.after.threshold_set_by,
        }
    store_rounds = max(1, len(reports) * len(rounds))
    return {
        "stores": stores,
        "rounds": len(rounds),
        # What reached the SuperLink from the stores, every byte of every request included.
        "bytes_sent_per_store_per_round": round(outcome.inbound_bytes / store_rounds),
        "model_bytes": int(manifest["values"]) * 4,
        "seconds_per_round": round(sum(seconds) / max(1, len(seconds)), 1),
        "training_seconds_per_round": round(sum(training) / max(1, len(training)), 1),
        "run_seconds": round(outcome.elapsed_seconds, 1),
        "epsilon": epsilon[-1] if epsilon else None,
        "model_version": version,
        "run_id": outcome.run.run_id,
        "strategy": options.strategy,
        "update_encoding": options.update_encoding,
        "local_epochs": options.local_epochs,
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _enrol_store(report: StoreReport, pipeline: FacePipeline, limits: TrainingLimits) -> None:
    paths = StorePaths(report.folder)
    report.folder.mkdir(parents=True)
    config = StoreConfig(store_id=report.store.name, training=limits)
    write_config(paths, config)
    consent = frozenset({Purpose.RECOGNITION, Purpose.MODEL_IMPROVEMENT})
    with Gallery.create(paths.database, paths.key) as gallery:
        for member in report.store.members:
            request = EnrolmentRequest.under(config, member.member_id, consent, member.name)
            try:
                enrolled = enrol_member(gallery, pipeline, request, member.enrolment)
            except EnrolmentError:
                report.rejected_photos += len(member.enrolment)
                continue
            report.enrolled += 1
            report.rejected_photos += sum(not photo.accepted for photo in enrolled.photos)


def _score(report: StoreReport, pipeline: FacePipeline) -> StoreScore:
    config = read_config(StorePaths(report.folder))
    with _gallery(report.folder) as gallery:
        threshold = decision_threshold(gallery, pipeline.model_version, config.target_fpir)
        return score_store(report.store, gallery, pipeline, threshold)


@contextmanager
def _gallery(folder: Path) -> Iterator[Gallery]:
    paths = StorePaths(folder)
    with Gallery.open(paths.database, paths.key) as gallery:
        yield gallery
