"""``loyalnet store``: a store node's everyday commands.

Every command works on one store folder, given by ``--store DIR`` or, without it, by
``LOYALNET_STORE`` or ``store_dir`` in the user's config file (see ``loyalnet.settings``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from loyalnet.errors import LoyalnetError
from loyalnet.settings import STORE_ENV, Settings
from store_node.config import StoreConfig, StorePaths, new_store_id, read_config, write_config
from store_node.enrolment import EnrolmentRequest, enrol_member
from store_node.face import FacePipeline
from store_node.gallery import Gallery, parse_purposes
from store_node.identification import identify_photos
from store_node.joining import join_federation
from store_node.retemplate import recognition_pipeline
from store_node.threshold import (
    DEFAULT_CALIBRATION_PEOPLE,
    calibration_people,
    decision_threshold,
    measure_impostor_scores,
    people_from_folder,
)

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

out = Console()
err = Console(stderr=True)


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
    out.print(f"store [bold]{config.store_id}[/] created in {paths.root}")
    out.print(f"  key file {paths.key} (0600): back it up; the gallery is unreadable without it")


@store_app.command()
def join(
    ca: Annotated[
        Path, typer.Option("--ca", help="The chain's CA certificate (ca.crt from the coordinator).")
    ],
    superlink: Annotated[
        str, typer.Option("--superlink", help="The chain's SuperLink as HOST:PORT.")
    ],
    store: StoreOption = None,
) -> None:
    """Join the chain's federated training: a node key, the chain's CA, the SuperLink.

    Makes the store's SuperNode key pair (private key 0600), keeps the chain's CA certificate
    and records the SuperLink's address in store.toml.

    Hand the printed node.pub to the chain (`loyalnet coordinator register-store`); until it
    is registered the SuperLink refuses this store. Joining again keeps the key pair.
    """
    paths = _paths(store)
    result = join_federation(paths, ca, superlink)
    config = read_config(paths)
    kept = "created" if result.new_identity else "kept (the chain knows the store by it)"
    out.print(f"store [bold]{config.store_id}[/] joins the SuperLink at {result.superlink}")
    out.print(f"  node key {result.identity.private_key} (0600): {kept}")
    out.print(f"  CA certificate {result.ca_certificate}")
    out.print("  hand this public key to the chain's coordinator:")
    print(result.identity.public_key.resolve())
    out.print(f"  (there: loyalnet coordinator register-store node.pub --name {config.store_id})")


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
        mark = "[green]accepted[/]" if photo.accepted else f"[yellow]rejected[/]: {photo.reason}"
        out.print(f"  {photo.source}: {mark}")
    out.print(
        f"member [bold]{report.member_id}[/] enrolled: {report.templates_added} template(s), "
        f"{report.crops_stored} crop(s) kept for model improvement"
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
                table.add_row(r.source, "", f"[red]{r.error}[/]", "")
            elif not r.faces:
                table.add_row(r.source, "", "[dim]no face[/]", "")
            for index, d in enumerate(r.faces):
                decision = f"[green]{d.match.member_id}[/]" if d.match.member_id else "unknown"
                table.add_row(r.source, str(index), decision, f"{d.match.similarity:.3f}")
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
            s.member_id,
            s.display_name or "",
            s.tier or "",
            purposes,
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
    with _opened(store) as (_, _config, gallery):
        if not yes and not typer.confirm(f"erase member {member} for good?"):
            raise typer.Exit(1)
        receipt = gallery.erase(member)
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
                }
            )
        )
        return
    out.print(
        f"member {member} erased: {receipt.templates_removed} template(s), "
        f"{receipt.crops_removed} crop(s), {receipt.consents_removed} consent record(s); "
        f"receipt [bold]{receipt.receipt_id}[/]"
    )


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

    Every pair of different people gives one impostor score; the threshold is the score that
    strangers exceed with probability FPIR when searched against this gallery's templates.
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
    summary = {
        "model_version": scores.model_version,
        "source": source,
        "target_fpir": config.target_fpir,
        "templates": threshold.comparisons,
        "threshold": round(threshold.value, 4),
        "far_per_comparison": threshold.far_per_comparison,
        "reliable": threshold.reliable,
    }
    if as_json:
        print(json.dumps(summary))
        return
    out.print(
        f"threshold {threshold.value:.3f} for FPIR {config.target_fpir:g} "
        f"(per-comparison FAR {threshold.far_per_comparison:.2g}, from {source})"
    )
    if not threshold.reliable:
        out.print("[yellow]too few impostor pairs for this FAR: calibrate with more people[/]")
