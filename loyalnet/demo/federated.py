"""The federated demo: three stores fine-tune the shared face model without sharing a face.

Steps, each shown as it runs:

1. three store folders, each with its own gallery and key, enrol their members (consent to
   recognition and model improvement) through their own camera (``loyalnet.demo.stores``);
2. each store's recognition is measured with the pretrained model;
3. a coordinator (SuperLink + ServerApp) and one SuperNode per store run as local processes on
   127.0.0.1 and train for a few rounds; only backbone weights and aggregate metrics travel;
4. every store adopts the final global model, once it has checked the model against its own
   architecture and the coordinator's signed manifest (each store holds the chain's
   model-signing public key, as ``loyalnet store join`` gives it): its templates are
   re-computed from its own crops, and the threshold is re-calibrated for the new model;
5. recognition is measured again.

Everything started is stopped at the end, on an error, or on Ctrl-C.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coordinator.flower_app import write_flower_app
from coordinator.model_versions import list_model_versions, load_model_version, read_manifest
from coordinator.pki import create_coordinator_tls
from coordinator.processes import LocalFederation, RunStatus
from loyalnet.demo.evaluation import StoreScore, score_store
from loyalnet.demo.stores import DemoPlan, DemoStore, plan_stores
from loyalnet.errors import LoyalnetError
from store_node.config import StoreConfig, StorePaths, TrainingLimits, read_config, write_config
from store_node.enrolment import EnrolmentError, EnrolmentRequest, enrol_member
from store_node.face import FacePipeline
from store_node.gallery import Gallery, Purpose
from store_node.model_check import install_model_signing_key
from store_node.node_identity import create_node_identity
from store_node.retemplate import adopt_model, recognition_pipeline
from store_node.threshold import (
    DEFAULT_CALIBRATION_PEOPLE,
    calibration_people,
    decision_threshold,
    measure_impostor_scores,
)
from store_node.training import fine_tuned_version

Step = Callable[[str], None]


@dataclass(frozen=True)
class FederatedDemoOptions:
    """The demo's knobs; the defaults finish within minutes on a 2-core machine."""

    plan: DemoPlan = field(default_factory=DemoPlan)
    rounds: int = 3
    local_epochs: int = 1
    learning_rate: float = 0.001
    strategy: str = "fedavg"
    calibration_people: int = DEFAULT_CALIBRATION_PEOPLE
    round_timeout_seconds: float = 600.0


@dataclass
class StoreReport:
    """Before and after, for one store."""

    store: DemoStore
    folder: Path
    enrolled: int = 0
    rejected_photos: int = 0
    before: StoreScore | None = None
    after: StoreScore | None = None
    retemplated: int = 0
    needs_reenrolment: int = 0


def run_federated_demo(
    workdir: Path, options: FederatedDemoOptions, step: Step, threads: int | None = None
) -> dict[str, Any]:
    """Run the whole demo in ``workdir`` and return its summary (see ``summary_json``)."""
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

    step("starting the coordinator (TLS, store authentication) and 3 store nodes on 127.0.0.1")
    coordinator_dir = workdir / "coordinator"
    tls = create_coordinator_tls(coordinator_dir / "tls", "demo chain")
    with LocalFederation(workdir / "flower", tls=tls) as flower:
        flower.start_superlink()
        for report in reports:
            # Each store makes its own key pair; only the public key reaches the coordinator.
            identity = create_node_identity(report.folder)
            # As `loyalnet store join` does: the store adopts only models this key signed.
            install_model_signing_key(
                report.folder,
                tls.model_signing_public_key.read_bytes(),
                str(tls.model_signing_public_key),
            )
            flower.register_store(identity.public_key, report.store.name)
            flower.start_supernode(report.store.name, report.folder, node_config={"threads": 1})
        flower.wait_for_supernodes(len(reports))
        run_config: dict[str, bool | int | float | str] = {
            "coordinator-dir": str(coordinator_dir),
            "num-rounds": options.rounds,
            "min-stores": len(reports),
            "local-epochs": options.local_epochs,
            "learning-rate": options.learning_rate,
            "strategy": options.strategy,
            "round-timeout-seconds": options.round_timeout_seconds,
        }
        run_id = flower.submit_run(write_flower_app(coordinator_dir), run_config)
        status = _follow_run(flower, run_id, options, step)
    if not status.completed:
        raise LoyalnetError(
            f"the federated run ended as {status.status}: {status.details or 'no details'}; "
            f"the processes' logs are in {workdir / 'flower' / 'logs'}."
        )

    saved = list_model_versions(coordinator_dir / "models")[-1]
    global_model = load_model_version(saved)
    manifest = read_manifest(saved)
    version = fine_tuned_version(global_model)
    for report in reports:
        step(f"{report.store.name}: adopting {version} and re-computing templates")
        adoption = adopt_model(report.folder, global_model, version, manifest=manifest)
        step(f"{report.store.name}: {adoption.provenance.summary}")
        report.retemplated = len(adoption.retemplated)
        report.needs_reenrolment = len(adoption.needs_reenrolment)
    step(f"calibrating the threshold of {version} on {options.calibration_people} strangers")
    tuned = recognition_pipeline(reports[0].folder, threads=threads)
    people = calibration_people(limit=options.calibration_people)
    impostors = measure_impostor_scores(tuned, people, f"LFW single-photo people ({len(people)})")
    for report in reports:
        with _gallery(report.folder) as gallery:
            gallery.set_calibration(impostors, read_config(StorePaths(report.folder)).target_fpir)
        step(f"{report.store.name}: measuring recognition with the federated model")
        report.after = _score(report, tuned)

    return summary_json(reports, manifest, status, options, version)


def summary_json(
    reports: list[StoreReport],
    manifest: dict[str, Any],
    status: RunStatus,
    options: FederatedDemoOptions,
    version: str,
) -> dict[str, Any]:
    """The demo's result as plain JSON values (the ``--json`` output)."""
    rounds = manifest["rounds"]
    seconds = [float(metrics.get("round-seconds", 0.0)) for metrics in rounds.values()]
    epsilon = [metrics["epsilon"] for metrics in rounds.values() if "epsilon" in metrics]
    stores: dict[str, Any] = {}
    for report in reports:
        assert report.before is not None and report.after is not None
        stores[report.store.name] = {
            "camera": report.store.camera,
            "members": report.enrolled,
            "rank1_before": round(report.before.rank1, 4),
            "rank1_after": round(report.after.rank1, 4),
            "strangers": report.before.strangers,
            "strangers_accepted_before": report.before.strangers_accepted,
            "strangers_accepted_after": report.after.strangers_accepted,
            "probes": report.before.probes,
            "threshold_before": round(report.before.threshold, 4),
            "threshold_after": round(report.after.threshold, 4),
        }
    store_rounds = max(1, len(reports) * len(rounds))
    return {
        "stores": stores,
        "rounds": len(rounds),
        # What reached the SuperLink from the stores, every byte of every request included.
        "bytes_sent_per_store_per_round": round(status.inbound_bytes / store_rounds),
        "model_bytes": int(manifest["values"]) * 4,
        "seconds_per_round": round(sum(seconds) / max(1, len(seconds)), 1),
        "run_seconds": round(status.elapsed_seconds, 1),
        "epsilon": epsilon[-1] if epsilon else None,
        "model_version": version,
        "strategy": options.strategy,
        "local_epochs": options.local_epochs,
    }


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
        return score_store(report.store, gallery, pipeline, threshold.value)


@contextmanager
def _gallery(folder: Path) -> Iterator[Gallery]:
    paths = StorePaths(folder)
    with Gallery.open(paths.database, paths.key) as gallery:
        yield gallery


def _follow_run(
    flower: LocalFederation, run_id: int, options: FederatedDemoOptions, step: Step
) -> RunStatus:
    started = time.monotonic()
    deadline = started + options.rounds * options.round_timeout_seconds + 120
    while True:
        status = flower.run_status(run_id)
        if status.finished:
            return status
        if time.monotonic() > deadline:
            raise LoyalnetError(f"run {run_id} did not finish in time; see `flwr log {run_id}`.")
        elapsed = time.monotonic() - started
        step(
            f"federated run {run_id}: {options.rounds} round(s) of {options.strategy}, "
            f"{elapsed:.0f} s, {status.inbound_bytes / 1e6:.1f} MB received from stores"
        )
        # Each status query starts a `flwr` process (~0.7 s of CPU): ask rarely on 2 cores.
        time.sleep(10.0)
