"""``loyalnet demo store``: one store end to end on real faces.

It runs one store end to end on LFW: a fresh store enrols consenting
people from a few photos each, identifies their other photos and walk-in strangers, then erases
one member and shows that their face is no longer recognised.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from loyalnet.settings import Settings
from store_node.config import StoreConfig, StorePaths, write_config
from store_node.datasets.lfw import lfw_people
from store_node.enrolment import EnrolmentError, EnrolmentRequest, enrol_member
from store_node.face import FacePipeline
from store_node.gallery import Gallery, Purpose
from store_node.identification import identify_photos
from store_node.threshold import DEFAULT_CALIBRATION_PEOPLE, decision_threshold

MAX_PROBES_PER_MEMBER = 5

out = Console()
err = Console(stderr=True)


@dataclass
class MemberResult:
    """One demo member: what enrolment made of their photos and how their probes went."""

    member_id: str
    name: str
    purposes: frozenset[Purpose]
    accepted: int = 0
    rejected: list[str] = field(default_factory=list)
    probes: int = 0
    correct: int = 0
    wrong: int = 0
    unknown: int = 0


def store_demo(
    members: Annotated[int, typer.Option(min=2, help="How many LFW people to enrol.")] = 20,
    enrol_photos: Annotated[int, typer.Option(min=1, help="Photos per member used to enrol.")] = 3,
    strangers: Annotated[int, typer.Option(min=0, help="Walk-in strangers to identify.")] = 60,
    seed: Annotated[int, typer.Option(help="Which people are picked.")] = 7,
    store: Annotated[
        Path | None,
        typer.Option(help="Keep the demo store in this new folder (default: a temp folder)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print only a JSON summary.")] = False,
) -> None:
    """Enrol LFW people into a fresh store, identify held-out photos and strangers, erase one."""
    everyone = lfw_people()
    people = {name: paths for name, paths in everyone.items() if len(paths) > enrol_photos}
    rng = random.Random(seed)
    chosen = rng.sample(sorted(people), min(members, len(people)))
    # Strangers are LFW people with one photo that the default calibration did not use.
    singles = sorted(name for name, paths in everyone.items() if len(paths) == 1)
    picked = rng.sample(singles[DEFAULT_CALIBRATION_PEOPLE:], min(strangers, len(singles)))
    walk_ins = [everyone[name][0] for name in picked]

    root = store or Path(tempfile.mkdtemp(prefix="loyalnet-demo-"))
    try:
        summary = _run(root, people, chosen, walk_ins, enrol_photos, as_json)
    finally:
        if store is None:
            shutil.rmtree(root, ignore_errors=True)
    if as_json:
        print(json.dumps(summary))


def _run(
    root: Path,
    people: dict[str, list[Path]],
    chosen: list[str],
    walk_ins: list[Path],
    enrol_photos: int,
    quiet: bool,
) -> dict[str, Any]:
    paths = StorePaths(root)
    root.mkdir(parents=True, exist_ok=True)
    config = StoreConfig(store_id="demo-store")
    write_config(paths, config)
    with err.status("loading the face models…") if not quiet else nullcontext():
        pipeline = FacePipeline.load(flip=config.flip, threads=Settings.from_environment().threads)
    results: list[MemberResult] = []
    with Gallery.create(paths.database, paths.key) as gallery, _progress(quiet) as bar:
        enrol_task = bar.add_task("enrolling members", total=len(chosen))
        for index, name in enumerate(chosen):
            # Every other member also agrees to model improvement, so both kinds are shown.
            purposes = frozenset({Purpose.RECOGNITION})
            if index % 2 == 0:
                purposes |= {Purpose.MODEL_IMPROVEMENT}
            result = MemberResult(f"M{index + 1:04d}", name.replace("_", " "), purposes)
            request = EnrolmentRequest.under(config, result.member_id, purposes, result.name)
            try:
                report = enrol_member(gallery, pipeline, request, people[name][:enrol_photos])
                result.accepted = report.templates_added
                result.rejected = [p.reason for p in report.photos if not p.accepted]
            except EnrolmentError as error:
                result.rejected = [str(error)]
            results.append(result)
            bar.advance(enrol_task)

        threshold = decision_threshold(gallery, pipeline.model_version, config.target_fpir)
        enrolled = [r for r in results if r.accepted]
        probe_task = bar.add_task("identifying held-out photos", total=len(enrolled))
        for result, name in zip(results, chosen, strict=True):
            if not result.accepted:
                continue
            probes = people[name][enrol_photos : enrol_photos + MAX_PROBES_PER_MEMBER]
            for photo in identify_photos(
                gallery, pipeline, probes, threshold.value, all_faces=False
            ):
                if not photo.faces:
                    continue
                result.probes += 1
                decided = photo.faces[0].match.member_id
                if decided == result.member_id:
                    result.correct += 1
                elif decided is None:
                    result.unknown += 1
                else:
                    result.wrong += 1
            bar.advance(probe_task)

        stranger_task = bar.add_task("identifying walk-in strangers", total=len(walk_ins))
        strangers_seen = strangers_accepted = 0
        for walk_in in walk_ins:
            for photo in identify_photos(
                gallery, pipeline, [walk_in], threshold.value, all_faces=False
            ):
                if photo.faces:
                    strangers_seen += 1
                    strangers_accepted += photo.faces[0].match.member_id is not None
            bar.advance(stranger_task)

        erased = enrolled[0]
        receipt = gallery.erase(erased.member_id)
        probe = people[chosen[results.index(erased)]][enrol_photos]
        after = identify_photos(gallery, pipeline, [probe], threshold.value, all_faces=False)[0]
        after_decision = after.faces[0].match.member_id if after.faces else None

    probe_count = sum(r.probes for r in results)
    summary: dict[str, Any] = {
        "members": len(results),
        "members_enrolled": len(enrolled),
        "enrol_photos_accepted": sum(r.accepted for r in results),
        "enrol_photos_rejected": sum(len(r.rejected) for r in results),
        "threshold": round(threshold.value, 4),
        "target_fpir": config.target_fpir,
        "probes": probe_count,
        "rank1": round(sum(r.correct for r in results) / probe_count, 4) if probe_count else None,
        "probes_unknown": sum(r.unknown for r in results),
        "probes_wrong_member": sum(r.wrong for r in results),
        "strangers": strangers_seen,
        "strangers_accepted": strangers_accepted,
        "erased_member": erased.member_id,
        "erasure_receipt": receipt.receipt_id,
        "erased_member_after": after_decision or "unknown",
    }
    if not quiet:
        _show(results, summary)
    return summary


def _show(results: list[MemberResult], summary: dict[str, Any]) -> None:
    table = Table(title="store demo: LFW people enrolled as members")
    table.add_column("member")
    table.add_column("name", no_wrap=True, max_width=24)
    table.add_column("consent")
    for column in ("photos ok", "held-out", "correct", "unknown", "wrong"):
        table.add_column(column, justify="right")
    notes: list[str] = []
    for r in results:
        consent = "recog+model" if Purpose.MODEL_IMPROVEMENT in r.purposes else "recog"
        # Names and reasons (which quote photo paths) are data: shown as written, not markup.
        notes += [escape(f"{r.member_id}: {reason}") for reason in r.rejected]
        table.add_row(
            escape(r.member_id),
            escape(r.name),
            consent,
            f"{r.accepted}/{r.accepted + len(r.rejected)}",
            str(r.probes),
            f"[green]{r.correct}[/]",
            str(r.unknown),
            f"[red]{r.wrong}[/]" if r.wrong else "0",
        )
    out.print(table)
    for note in notes:
        out.print(f"[yellow]rejected[/] {note}")
    out.print(
        f"threshold {summary['threshold']:.3f} (target FPIR {summary['target_fpir']:g}); "
        f"rank-1 on held-out photos {summary['rank1']}; "
        f"strangers accepted {summary['strangers_accepted']} of {summary['strangers']}"
    )
    out.print(
        f"erased {summary['erased_member']} (receipt {summary['erasure_receipt']}); "
        f"their photo now: [bold]{summary['erased_member_after']}[/]"
    )


def _progress(quiet: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=quiet,
        transient=False,
    )
