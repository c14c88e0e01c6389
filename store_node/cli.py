"""``loyalnet store``: a store node's everyday commands.

Every command works on one store folder, given by ``--store DIR`` or, without it, by
``LOYALNET_STORE`` or ``store_dir`` in the user's config file (see ``loyalnet.settings``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from loyalnet.errors import LoyalnetError
from loyalnet.settings import STORE_ENV, Settings
from store_node.camera.fusion import FUSIONS
from store_node.camera.service import ServiceSettings
from store_node.camera.visit_log import VisitEvent, VisitLog, forget_member_visits
from store_node.config import (
    DEFAULT_LOCAL_API,
    CameraSettings,
    StoreConfig,
    StorePaths,
    new_store_id,
    read_config,
    write_config,
)
from store_node.enrolment import EnrolmentRequest, enrol_member
from store_node.face import FacePipeline
from store_node.gallery import Gallery, ScrubError, parse_purposes
from store_node.gallery.migration import migrate_gallery
from store_node.identification import identify_photos
from store_node.joining import join_federation
from store_node.model_check import read_model_file
from store_node.retemplate import adopt_model, recognition_pipeline
from store_node.serve import configure_logging, serve_store
from store_node.sync import AgentSettings
from store_node.threshold import (
    DEFAULT_CALIBRATION_PEOPLE,
    calibration_people,
    calibration_report,
    decision_threshold,
    measure_impostor_scores,
    people_from_folder,
)
from store_node.training import fine_tuned_version

store_app = typer.Typer(
    help=(
        "A store node: enrol consenting members, recognise them, forget them. "
        "Start with `loyalnet store init --store DIR`."
    ),
    no_args_is_help=True,
)

StoreOption = Annotated[
    Path | None,
    typer.Option(
        "--store",
        help=f"The store folder (default: ${STORE_ENV}, the config file's store_dir, or ./store).",
        show_default=False,
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON object instead of tables.")
]

# Ids, names, tiers, paths and messages come from staff, members and files: every one of them
# goes through escape() (or a markup=False print), so "M[/oops]" is shown as typed, never read
# as rich markup. emoji=False keeps a ":smile:" in a name from turning into a picture.
out = Console(emoji=False)
err = Console(stderr=True, emoji=False)


def _paths(store: Path | None) -> StorePaths:
    return StorePaths(store if store is not None else Settings.from_environment().store_dir)


@contextmanager
def _opened(store: Path | None) -> Iterator[tuple[StorePaths, StoreConfig, Gallery]]:
    paths = _paths(store)
    config = read_config(paths)
    with Gallery.open(paths.database, paths.key) as gallery:
        yield paths, config, gallery


def _pipeline(paths: StorePaths) -> FacePipeline:
    """The pipeline of the model the store recognises with (pretrained until one is adopted)."""
    with err.status("loading the face models…"):
        return recognition_pipeline(paths.root, threads=Settings.from_environment().threads)


@store_app.command()
def init(
    store: StoreOption = None,
    store_id: Annotated[str | None, typer.Option(help="The chain's name for this store.")] = None,
    fpir: Annotated[
        float,
        typer.Option(
            help="Target false-positive identification rate, e.g. 0.001 = 1 stranger in 1000."
        ),
    ] = 0.001,
    policy_version: Annotated[
        str, typer.Option(help="Consent policy members agree to.")
    ] = "2026-11",
    retention_days: Annotated[int, typer.Option(help="Days a consent stays valid.")] = 365,
) -> None:
    """Create a store folder: settings, an encrypted gallery, and the store key (mode 0600).

    Keep a copy of store.key somewhere safe: without it the gallery cannot be read.
    """
    paths = _paths(store)
    if paths.config.exists() or paths.database.exists() or paths.key.exists():
        raise LoyalnetError(f"{paths.root} already holds a store; choose another folder.")
    config = StoreConfig(
        store_id=store_id or new_store_id(),
        target_fpir=fpir,
        policy_version=policy_version,
        retention_days=retention_days,
    )
    paths.root.mkdir(parents=True, exist_ok=True)
    Gallery.create(paths.database, paths.key).close()
    write_config(paths, config)
    out.print(f"store [bold]{escape(config.store_id)}[/] created in {escape(str(paths.root))}")
    out.print(
        f"  key file {escape(str(paths.key))} (0600): back it up; the gallery is unreadable "
        "without it"
    )


@store_app.command()
def join(
    ca: Annotated[
        Path, typer.Option("--ca", help="The chain's CA certificate (ca.crt from the coordinator).")
    ],
    superlink: Annotated[
        str, typer.Option("--superlink", help="The chain's SuperLink as HOST:PORT.")
    ],
    store: StoreOption = None,
    model_key: Annotated[
        Path | None,
        typer.Option(
            "--model-key",
            help="The chain's model-signing.pub (default: the one beside --ca, if there).",
        ),
    ] = None,
    control_plane: Annotated[
        str | None,
        typer.Option(
            "--control-plane",
            help="The chain's control plane (for `loyalnet store serve`) as HOST:PORT "
            "(default: keep the one store.toml holds).",
        ),
    ] = None,
    certificate: Annotated[
        Path | None,
        typer.Option(
            "--certificate",
            help="This store's control-plane certificate from the chain (stores/<name>.crt of "
            "`loyalnet coordinator register-store`; default: keep the one the store holds).",
        ),
    ] = None,
) -> None:
    """Join the chain's federated training: a node key, the chain's CA, the SuperLink.

    Makes the store's SuperNode key pair (private key 0600), keeps the chain's CA certificate
    and model-signing public key, and records the SuperLink's address in store.toml. With the
    model-signing key the store adopts only models the chain's coordinator signed.

    Hand the printed node.pub to the chain (`loyalnet coordinator register-store`); until it
    is registered the SuperLink refuses this store. Joining again keeps the key pair.
    Once registered, join again with --control-plane HOST:PORT --certificate FILE (the
    certificate the chain issued for node.pub) to run `loyalnet store serve`.
    """
    paths = _paths(store)
    result = join_federation(
        paths, ca, superlink, model_key, control_plane=control_plane, certificate_file=certificate
    )
    config = read_config(paths)
    kept = "created" if result.new_identity else "kept (the chain knows the store by it)"
    out.print(
        f"store [bold]{escape(config.store_id)}[/] joins the SuperLink at "
        f"{escape(result.superlink)}"
    )
    out.print(f"  node key {escape(str(result.identity.private_key))} (0600): {kept}")
    out.print(f"  CA certificate {escape(str(result.ca_certificate))}")
    if result.model_signing_key is not None:
        out.print(
            f"  model-signing key {escape(str(result.model_signing_key))} "
            f"({escape(str(result.model_signing_key_id))}): "
            "only models it signed are adopted"
        )
    else:
        out.print(
            "  no model-signing key (none given, none beside the CA certificate): adopted "
            "models are checked for hash, names, shapes and values, not for who made them"
        )
    if result.control_plane:
        out.print(f"  control plane {escape(result.control_plane)}")
    if result.control_plane_certificate is not None:
        held = "installed" if result.new_certificate else "kept"
        then = (
            "run `loyalnet store serve` to connect"
            if result.control_plane
            else "join again with --control-plane HOST:PORT to connect"
        )
        path = escape(str(result.control_plane_certificate))
        out.print(f"  control-plane certificate {path}: {held}; {then}")
    out.print("  hand this public key to the chain's coordinator:")
    print(result.identity.public_key.resolve())
    store_id = escape(config.store_id)
    out.print(f"  (there: loyalnet coordinator register-store node.pub --name {store_id})")


@store_app.command()
def serve(
    store: StoreOption = None,
    once: Annotated[
        bool, typer.Option("--once", help="Run one sync cycle, then exit (for scripts).")
    ] = False,
    calibration_people: Annotated[
        int,
        typer.Option(
            min=2,
            help="Strangers to calibrate the threshold with after the chain's model is adopted "
            "(as `loyalnet store calibrate --limit`); fewer is faster and less exact.",
        ),
    ] = DEFAULT_CALIBRATION_PEOPLE,
    camera: Annotated[
        list[str] | None,
        typer.Option(
            "--camera",
            help="A camera besides those of store.toml, as NAME=SOURCE; SOURCE is a camera "
            "index (0), an rtsp:// or http(s):// stream, a video file or a folder of images. "
            f"Looked at {CameraSettings.fps:g} times a second, faces from "
            f"{CameraSettings.smallest_face} pixels wide. Repeat for more cameras.",
            show_default=False,
        ),
    ] = None,
    fusion: Annotated[
        str,
        typer.Option(
            help="How a visit's best frames decide: mean (average their embeddings) or vote."
        ),
    ] = "mean",
    api: Annotated[
        str | None,
        typer.Option(
            help="Where the store's local gRPC API (loyalnet.store.v1: visit events, enrol, "
            "identify, erase, health) listens, as HOST:PORT, or off; default: \\[local_api] "
            f"of store.toml, else {DEFAULT_LOCAL_API}.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the store until SIGTERM or Ctrl-C: its cameras, and its link to the chain.

    Cameras (\\[\\[cameras]] in store.toml, or --camera): each face is followed while in view,
    recognised once from its best frames, and logged as one visit in visits.db: a member's
    visit with the member id, a stranger's with the camera and times only. No frame, face
    or stranger's template is kept. See `loyalnet store visits` and `loyalnet store footfall`.

    Local API (gRPC, loyalnet.store.v1, on 127.0.0.1:7070 unless --api or \\[local_api] says
    otherwise): the store's own systems stream visit events (resuming from the last event id
    they saw), enrol, identify a photo, erase a member and read the cameras' health.

    Control plane (after `loyalnet store join ... --control-plane HOST:PORT --certificate
    FILE`): a heartbeat of aggregate numbers (never a member's data), the chain's erasures
    and model adoptions, each answered with a receipt signed by the store's node key. While
    the coordinator is unreachable it retries with back-off. Logs go to stderr.
    """
    configure_logging()
    threads = Settings.from_environment().threads
    settings = AgentSettings(calibration_people=calibration_people, threads=threads)
    if fusion not in FUSIONS:
        raise LoyalnetError(f"--fusion {fusion} is not known; use {' or '.join(FUSIONS)}.")
    cameras = tuple(_camera_option(text) for text in camera or [])
    camera_settings = ServiceSettings(fusion=fusion)
    paths = _paths(store)
    local_api = None
    if api is not None:
        configured = read_config(paths).local_api
        local_api = replace(configured, address="" if api == "off" else api)
    raise typer.Exit(
        serve_store(
            paths.root,
            once=once,
            settings=settings,
            cameras=cameras,
            camera_settings=camera_settings,
            api=local_api,
        )
    )


def _camera_option(text: str) -> CameraSettings:
    name, equals, source = text.partition("=")
    if not equals or not name.strip() or not source.strip():
        raise LoyalnetError(
            f"--camera {text} is not NAME=SOURCE; write e.g. --camera entrance=0 or "
            "--camera door=/videos/door.mp4."
        )
    return CameraSettings(name=name.strip(), source=source.strip())


@store_app.command()
def visits(
    store: StoreOption = None,
    after: Annotated[
        int, typer.Option(min=0, help="Only events numbered above this (the last one seen).")
    ] = 0,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="At most this many.")] = 100,
    as_json: JsonOption = False,
) -> None:
    """The cameras' visit events, oldest first: member visits name the member; unknown
    visits hold the camera and times only. Events are kept 7 days (erasure removes a
    member's at once); read on from the last event id you saw with --after."""
    paths = _paths(store)
    read_config(paths)
    with VisitLog.open(paths.root, create=False) as log:
        events = log.events_after(after, limit)
    if as_json:
        print(json.dumps({"events": [_event_json(e) for e in events]}))
        return
    table = Table("event", "camera", "started", "ended", "who", "similarity", "frames")
    for e in events:
        v = e.visit
        table.add_row(
            str(e.event_id),
            escape(v.camera),
            v.started_at.isoformat(timespec="seconds"),
            v.ended_at.isoformat(timespec="seconds"),
            f"[green]{escape(v.member_id)}[/]" if v.member_id else "unknown",
            f"{v.similarity:.3f}" if v.similarity is not None else "",
            str(v.frames_used) if v.frames_used is not None else "",
        )
    out.print(table)


def _event_json(event: VisitEvent) -> dict[str, Any]:
    v = event.visit
    record: dict[str, Any] = {
        "event": event.event_id,
        "camera": v.camera,
        "started_at": v.started_at.isoformat(),
        "ended_at": v.ended_at.isoformat(),
        "member": v.member_id,
    }
    if v.member_id is not None:
        record |= {"similarity": v.similarity, "frames_used": v.frames_used}
    return record


@store_app.command()
def footfall(
    store: StoreOption = None,
    hours: Annotated[
        int | None,
        typer.Option(min=1, help="Only the last this many hours (default: all kept)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Visits per camera and hour (UTC): members recognised and everyone else. Numbers only."""
    paths = _paths(store)
    read_config(paths)
    since = None if hours is None else datetime.now(UTC) - timedelta(hours=hours - 1)
    with VisitLog.open(paths.root, create=False) as log:
        counts = log.footfall(since)
    if as_json:
        rows = [
            {
                "camera": c.camera,
                "hour": c.hour.isoformat(),
                "member_visits": c.member_visits,
                "unknown_visits": c.unknown_visits,
            }
            for c in counts
        ]
        print(json.dumps({"footfall": rows}))
        return
    table = Table("hour (UTC)", "camera", "member visits", "unknown visits")
    for c in counts:
        table.add_row(
            c.hour.strftime("%Y-%m-%d %H:00"),
            escape(c.camera),
            str(c.member_visits),
            str(c.unknown_visits),
        )
    out.print(table)


@store_app.command()
def enroll(
    photos: Annotated[list[Path], typer.Argument(help="Photos of the member, alone in frame.")],
    member: Annotated[str, typer.Option("--member", help="The loyalty member id.")],
    consent: Annotated[
        str,
        typer.Option(
            "--consent",
            help="Purposes the member agreed to in writing: recognition[,model_improvement].",
        ),
    ],
    name: Annotated[str | None, typer.Option(help="Display name shown to staff.")] = None,
    tier: Annotated[str | None, typer.Option(help="Loyalty tier, e.g. gold.")] = None,
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Enrol a member who gave written consent, from one or more photos.

    Photos with no face, or with a second person beside the member, are rejected one by one
    with the reason; the rest still count. Enrolment crops are kept (encrypted) only when the
    member also consented to model_improvement.
    """
    with _opened(store) as (paths, config, gallery):
        request = EnrolmentRequest.under(config, member, parse_purposes(consent), name, tier)
        report = enrol_member(gallery, _pipeline(paths), request, photos)
    if as_json:
        print(
            json.dumps(
                {
                    "member": report.member_id,
                    "templates_added": report.templates_added,
                    "crops_stored": report.crops_stored,
                    "consent_expires_at": report.consent.expires_at.isoformat(),
                    "photos": [
                        {"photo": p.source, "accepted": p.accepted, "reason": p.reason}
                        for p in report.photos
                    ],
                }
            )
        )
        return
    for photo in report.photos:
        reason = escape(photo.reason)
        mark = "[green]accepted[/]" if photo.accepted else f"[yellow]rejected[/]: {reason}"
        out.print(f"  {escape(photo.source)}: {mark}")
    out.print(
        f"member [bold]{escape(report.member_id)}[/] enrolled: "
        f"{report.templates_added} template(s), {report.crops_stored} crop(s) kept for model "
        "improvement"
    )


@store_app.command()
def identify(
    photos: Annotated[list[Path], typer.Argument(help="Photos to search for members.")],
    store: StoreOption = None,
    as_json: JsonOption = False,
    largest: Annotated[bool, typer.Option(help="Only the largest face of each photo.")] = False,
) -> None:
    """Say which member each face belongs to, or "unknown".

    The threshold follows the store's target FPIR for the gallery's current size; a photo
    that cannot be read is reported and makes the exit code 1.
    """
    with _opened(store) as (paths, config, gallery):
        pipeline = _pipeline(paths)
        threshold = decision_threshold(gallery, pipeline.model_version, config.target_fpir)
        results = identify_photos(gallery, pipeline, photos, threshold.value, all_faces=not largest)
    if as_json:
        payload: list[dict[str, Any]] = [
            {
                "photo": r.source,
                "error": r.error or None,
                "faces": [
                    {
                        "box": [round(v, 1) for v in d.box],
                        "member": d.match.member_id,
                        "similarity": round(d.match.similarity, 4),
                        "threshold": round(d.match.threshold, 4),
                    }
                    for d in r.faces
                ],
            }
            for r in results
        ]
        print(json.dumps({"threshold": round(threshold.value, 4), "photos": payload}))
    else:
        table = Table(
            "photo", "face", "decision", "similarity", title=f"threshold {threshold.value:.3f}"
        )
        for r in results:
            if r.error:
                table.add_row(escape(r.source), "", f"[red]{escape(r.error)}[/]", "")
            elif not r.faces:
                table.add_row(escape(r.source), "", "[dim]no face[/]", "")
            for index, d in enumerate(r.faces):
                member_id = d.match.member_id
                decision = f"[green]{escape(member_id)}[/]" if member_id else "unknown"
                table.add_row(escape(r.source), str(index), decision, f"{d.match.similarity:.3f}")
        out.print(table)
    if any(r.error for r in results):
        raise typer.Exit(1)


@store_app.command()
def members(store: StoreOption = None, as_json: JsonOption = False) -> None:
    """List enrolled members, their consent and how many templates they have. Never a face."""
    with _opened(store) as (_, _config, gallery):
        summaries = gallery.members()
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "member": s.member_id,
                        "name": s.display_name,
                        "tier": s.tier,
                        "purposes": sorted(str(p) for p in s.purposes),
                        "consent_expires_at": s.consent_expires_at.isoformat()
                        if s.consent_expires_at
                        else None,
                        "templates": s.templates,
                        "crops": s.crops,
                        "model_versions": sorted(s.model_versions),
                    }
                    for s in summaries
                ]
            )
        )
        return
    table = Table("member", "name", "tier", "consent", "expires", "templates", "crops")
    for s in summaries:
        expires = (
            s.consent_expires_at.date().isoformat() if s.consent_expires_at else "[red]none[/]"
        )
        purposes = ",".join(sorted(str(p) for p in s.purposes))
        table.add_row(
            escape(s.member_id),
            escape(s.display_name or ""),
            escape(s.tier or ""),
            escape(purposes),
            expires,
            str(s.templates),
            str(s.crops),
        )
    out.print(table)


@store_app.command()
def erase(
    member: Annotated[str, typer.Argument(help="The loyalty member id to forget.")],
    store: StoreOption = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Forget a member completely: templates, crops, consent. Leaves a receipt, no biometrics."""
    with _opened(store) as (paths, _config, gallery):
        if not yes and not typer.confirm(f"erase member {member} for good?"):
            raise typer.Exit(1)
        receipt = gallery.erase(member)
    visit_events = forget_member_visits(paths.root, member)
    if as_json:
        print(
            json.dumps(
                {
                    "receipt": receipt.receipt_id,
                    "member_ref": receipt.member_ref,
                    "erased_at": receipt.erased_at.isoformat(),
                    "templates_removed": receipt.templates_removed,
                    "crops_removed": receipt.crops_removed,
                    "consents_removed": receipt.consents_removed,
                    "visit_events_removed": visit_events,
                }
            )
        )
        return
    out.print(
        f"member {escape(member)} erased: {receipt.templates_removed} template(s), "
        f"{receipt.crops_removed} crop(s), {receipt.consents_removed} consent record(s), "
        f"{visit_events} visit event(s); "
        f"receipt [bold]{receipt.receipt_id}[/]"
    )


@store_app.command()
def adopt(
    model: Annotated[
        Path,
        typer.Argument(
            help="A model version from the coordinator: its model-vNNNN.pt, with the "
            "model-vNNNN.json manifest beside it."
        ),
    ],
    version: Annotated[
        str | None,
        typer.Option(help="The name its templates carry (default: mobilefacenet-ft-<digest>)."),
    ] = None,
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Make a coordinator's model the store's recognition model, after checking it.

    The file must match its manifest's sha256, the tensors the store's own architecture
    (names, shapes, finite values) and the manifest's hash, names and shapes; a store that
    joined a chain with a model-signing key also needs the manifest signed by that key.
    A refused model changes nothing (the refusal is audited). Members with crops are
    re-templated, the rest are listed for re-enrolment; run `loyalnet store calibrate` next.
    """
    paths = _paths(store)
    received = read_model_file(model)
    name = version or fine_tuned_version(received.state)
    with err.status(f"checking and adopting {escape(name)}…"):
        report = adopt_model(paths.root, received.state, name, manifest=received.manifest)
    summary = {
        "model_version": report.model_version,
        "previous_version": report.previous_version,
        "retemplated": len(report.retemplated),
        "templates_added": report.templates_added,
        "needs_reenrolment": list(report.needs_reenrolment),
        "signed_by": report.provenance.signed_by,
        "checks": report.provenance.summary,
    }
    if as_json:
        print(json.dumps(summary))
        return
    out.print(
        f"recognising with [bold]{escape(report.model_version)}[/] "
        f"(was {escape(str(report.previous_version))})"
    )
    out.print(f"  checks: {report.provenance.summary}", markup=False)
    out.print(
        f"  {len(report.retemplated)} members re-templated, "
        f"{len(report.needs_reenrolment)} need to enrol again"
    )
    out.print("  next: loyalnet store calibrate (the threshold belongs to the old model)")


@store_app.command()
def calibrate(
    store: StoreOption = None,
    people: Annotated[
        Path | None,
        typer.Option(
            help="Strangers to calibrate with: a folder with one sub-folder per person "
            "(default: LFW people with a single photo, none of them members).",
        ),
    ] = None,
    limit: Annotated[
        int, typer.Option(help="At most this many people.")
    ] = DEFAULT_CALIBRATION_PEOPLE,
    fpir: Annotated[
        float | None, typer.Option(help="Also set a new target FPIR in store.toml.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Measure impostor scores of the current model and set the threshold from the target FPIR.

    Every pair of different people gives one impostor score; the reference threshold is the
    score that strangers exceed with probability FPIR when searched against this gallery's
    templates. The store decides with the strictest of that, its own (its members searched
    against each other, as seen through its own camera) and the reference shifted by how much
    higher its own impostor scores lie than the reference's. Printed: the threshold, the FPIR
    each sample expects there with a 95% interval and how many scores it rests on, and the FNIR
    on the members' own enrolment photos. The threshold follows enrolments and erasures by
    itself.
    """
    with _opened(store) as (paths, config, gallery):
        if fpir is not None:
            config = replace(config, target_fpir=fpir)
        pipeline = _pipeline(paths)
        crowd = people_from_folder(people) if people else calibration_people(limit=limit)
        crowd = dict(list(crowd.items())[:limit])
        source = str(people) if people else f"LFW single-photo people ({len(crowd)})"
        with Progress(
            TextColumn("calibrating"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err,
            disable=as_json,
        ) as bar:
            task = bar.add_task("photos", total=None)
            scores = measure_impostor_scores(
                pipeline,
                crowd,
                source,
                lambda done, total: bar.update(task, completed=done, total=total),
            )
        gallery.set_calibration(scores, config.target_fpir)
        if fpir is not None:
            write_config(paths, config)
        threshold = decision_threshold(gallery, pipeline.model_version, config.target_fpir)
    summary = {"source": source, **calibration_report(threshold, scores)}
    if as_json:
        print(json.dumps(summary))
        return
    _print_calibration(summary)


def _print_calibration(summary: dict[str, Any]) -> None:
    expected = summary["expected_fpir"]
    low, high = expected["interval"]
    out.print(
        f"threshold {summary['threshold']:.3f} for target FPIR {summary['target_fpir']:g} "
        f"({summary['members']} members, {summary['templates']} templates; set by the "
        f"{summary['governed_by']} sample)"
    )
    out.print(
        f"  expected FPIR {expected['estimate']:.2g}, {expected['confidence']:.0%} interval "
        f"[{low:.2g}, {high:.2g}]"
    )
    for part in expected["rests_on"]:
        out.print(
            f"    {escape(part['source'])}: {part['above_threshold']} of "
            f"{part['impostor_scores']:,} impostor scores above, searched against "
            f"{part['searched_against']} {part['per']}(s): FPIR {part['fpir']:.2g} "
            f"[{part['interval'][0]:.2g}, {part['interval'][1]:.2g}]"
        )
    adjusted = summary["camera_adjusted"]
    if adjusted is not None:
        out.print(
            f"  this camera's impostor scores lie {adjusted['shift']:+.3f} from the reference's "
            f"(read at rate {adjusted['measured_at_rate']:.2g} of {adjusted['own_scores']:,} "
            f"template pairs): camera-adjusted threshold {adjusted['threshold']:.3f}"
        )
    if summary["fnir"] is not None:
        out.print(
            f"  FNIR on the members' own enrolment photos (leave one out): "
            f"{summary['fnir']['rate']:.1%} of {summary['fnir']['searches']} searches"
        )
    if not expected["shown_at_target"]:
        if summary["governed_by"] == "own camera":
            why = "the threshold is its highest impostor score"
        else:
            why = "the threshold rests on the reference's tail, moved by the camera's shift"
        out.print(
            "[yellow]the store's own sample is too small to show an FPIR this low; "
            f"{why}, and the interval says how sure that is. It tightens as members enrol.[/]"
        )
    if not summary["reference"]["reliable"]:
        out.print("[yellow]too few impostor pairs for this FAR: calibrate with more people[/]")


# -- consent withdrawal, purge, scrub, check -------------------------------------------------
# Member ids come from staff and the loyalty system: they are printed with markup and emoji off,
# so an id such as "[bold]" or ":smile:" is shown as typed, never read as rich markup.


def _print_plain(console: Console, text: str) -> None:
    console.print(text, markup=False, emoji=False, highlight=False, soft_wrap=True)


def _blocked_scrub(error: ScrubError, as_json: bool) -> typer.Exit:
    """Report a committed change whose wiping must wait; `loyalnet store scrub` finishes it."""
    if as_json:
        print(json.dumps({"scrubbed": False, "detail": str(error)}))
    else:
        _print_plain(err, f"error: {error}")
    return typer.Exit(1)


@store_app.command()
def withdraw(
    member: Annotated[str, typer.Argument(help="The loyalty member id.")],
    purpose: Annotated[
        str,
        typer.Option(
            "--purpose",
            help="What the member withdraws: recognition, model_improvement, or both (comma list).",
        ),
    ],
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Record that a member withdrew consent, and delete what it covered at once.

    Withdrawing recognition deletes the member's templates, enrolment crops and class rows;
    withdrawing model_improvement deletes the crops and class rows. The member record and
    the consent history stay (use `loyalnet store erase` to forget the member altogether).
    """
    purposes = parse_purposes(purpose)
    with _opened(store) as (_, _config, gallery):
        try:
            result = gallery.withdraw(member, purposes)
        except ScrubError as error:
            raise _blocked_scrub(error, as_json) from error
    remaining = sorted(p.value for p in result.consent.purposes) if result.consent else []
    expires = result.consent.expires_at if result.consent else None
    if as_json:
        print(
            json.dumps(
                {
                    "member": member,
                    "receipt": result.receipt_id,
                    "withdrawn": sorted(p.value for p in result.withdrawn),
                    "consent_changed": result.consent_changed,
                    "purposes": remaining,
                    "consent_expires_at": expires.isoformat() if expires else None,
                    "templates_removed": result.removed.templates,
                    "crops_removed": result.removed.crops,
                    "class_weights_removed": result.removed.class_weights,
                    "scrubbed": True,
                }
            )
        )
        return
    withdrawn = ",".join(sorted(p.value for p in result.withdrawn))
    now_in_force = (
        f"{','.join(remaining)} until {expires.date().isoformat()}" if expires else "none"
    )
    recorded = "recorded" if result.consent_changed else "no consent in force covered it"
    _print_plain(
        out,
        f"member {member} withdrew {withdrawn} ({recorded}); consent in force now: "
        f"{now_in_force}; deleted {result.removed.templates} template(s), "
        f"{result.removed.crops} crop(s), {result.removed.class_weights} class row(s); "
        f"receipt {result.receipt_id}",
    )


@store_app.command()
def purge(store: StoreOption = None, as_json: JsonOption = False) -> None:
    """Delete the biometrics of members whose consent has expired or no longer covers them.

    Templates go when no consent to recognition is in force; crops and class rows when none to
    model_improvement is. Member records and consent histories stay. Run it daily (a store
    process may call Gallery.purge_expired instead); expired members are never matched meanwhile.
    """
    with _opened(store) as (_, _config, gallery):
        try:
            report = gallery.purge_expired()
        except ScrubError as error:
            raise _blocked_scrub(error, as_json) from error
    if as_json:
        print(
            json.dumps(
                {
                    "purged_at": report.purged_at.isoformat(),
                    "members": len(report.member_refs),
                    "member_refs": list(report.member_refs),
                    "receipts": list(report.receipt_ids),
                    "templates_removed": report.removed.templates,
                    "crops_removed": report.removed.crops,
                    "class_weights_removed": report.removed.class_weights,
                    "tampered": report.tampered,
                    "scrubbed": True,
                }
            )
        )
        return
    if not report.member_refs:
        _print_plain(out, "nothing to purge: a consent in force covers every stored biometric")
        return
    _print_plain(
        out,
        f"purged {len(report.member_refs)} member(s): {report.removed.templates} template(s), "
        f"{report.removed.crops} crop(s), {report.removed.class_weights} class row(s) deleted "
        "and wiped; their member records stay (they must re-enrol to be recognised)",
    )
    if report.tampered:
        _print_plain(
            out,
            f"{report.tampered} of them had consent records that failed their integrity check; "
            "see `loyalnet store check`",
        )


@store_app.command()
def scrub(store: StoreOption = None, as_json: JsonOption = False) -> None:
    """Finish wiping deleted data from gallery.db and its write-ahead log.

    Needed after an erase, withdraw or purge reported that another program kept the gallery
    open: run it once that program has finished. Exits 1 while the gallery is still held.
    """
    with _opened(store) as (paths, _config, gallery):
        try:
            gallery.scrub()
        except ScrubError as error:
            raise _blocked_scrub(error, as_json) from error
    if as_json:
        print(json.dumps({"scrubbed": True}))
        return
    _print_plain(
        out,
        f"scrubbed: no deleted row remains in {paths.database.name} or its write-ahead log",
    )


@store_app.command()
def check(store: StoreOption = None, as_json: JsonOption = False) -> None:
    """Check every member's consent records and sealed name; exits 1 when one fails.

    A consent record edited without the store key (a date, a purpose), copied from another
    member or deleted makes that member count as having no consent until a new one is recorded.
    """
    with _opened(store) as (_, _config, gallery):
        problems = gallery.check()
    if as_json:
        print(json.dumps([{"member": p.member_id, "problem": p.problem} for p in problems]))
    elif problems:
        for problem in problems:
            _print_plain(out, f"member {problem.member_id}: {problem.problem}")
    else:
        _print_plain(out, "every member's consent records and sealed name check out")
    if problems:
        raise typer.Exit(1)


@store_app.command()
def migrate(store: StoreOption = None, as_json: JsonOption = False) -> None:
    """Upgrade a gallery written by an older loyalnet: seal names and tiers, tag consents.

    In place and in one transaction; then the clear names are wiped from the files. Back up
    the store folder first. The old consent records could not be checked for tampering, so
    migrating vouches for them as they are. A gallery already up to date is left alone.
    """
    paths = _paths(store)
    try:
        result = migrate_gallery(paths.database, paths.key)
    except ScrubError as error:
        raise _blocked_scrub(error, as_json) from error
    if as_json:
        print(
            json.dumps(
                {
                    "from_schema": result.from_version,
                    "to_schema": result.to_version,
                    "members": result.members,
                    "consents": result.consents,
                }
            )
        )
    elif result.from_version == result.to_version:
        _print_plain(out, f"{paths.database} is already at schema {result.to_version}")
    else:
        _print_plain(
            out,
            f"{paths.database} migrated from schema {result.from_version} to "
            f"{result.to_version}: {result.members} member name(s) sealed, {result.consents} "
            "consent record(s) authenticated, old pages wiped",
        )
