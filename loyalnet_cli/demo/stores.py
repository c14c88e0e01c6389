"""The demo's three stores: who their members are, what their cameras do, who walks in.

Each store gets members no other store has, enrolment photos and held-out probe photos of
them, and strangers (people no store enrols), all seen through the store's camera:

- ``clean``: LFW people, photos as they are;
- ``low_resolution``: other LFW people, through a low-resolution camera
  (``store_node.cameras``), enrolment included, since the till camera is the same kind;
- ``harsh_lighting``: Extended Yale B people under its real extreme lighting; its strangers are
  Yale people the store does not enrol.

Photos are decoded and degraded once, here, so every evaluation sees the same pixels.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from store_node.cameras import CameraCondition, through_camera
from store_node.datasets.lfw import lfw_people
from store_node.datasets.yale import yale_people
from store_node.face import load_image
from store_node.threshold import DEFAULT_CALIBRATION_PEOPLE

Photo = NDArray[np.uint8]


@dataclass(frozen=True)
class DemoMember:
    """A member of a demo store and their photos (already through the store's camera)."""

    member_id: str
    name: str
    enrolment: list[Photo]
    probes: list[Photo]


@dataclass(frozen=True)
class DemoStore:
    """One demo store: its name, its camera, its members and the strangers it sees."""

    name: str
    camera: str
    members: list[DemoMember]
    strangers: list[Photo]


@dataclass(frozen=True)
class DemoPlan:
    """How big the demo is."""

    members_per_store: int = 12
    enrolment_photos: int = 5
    probes_per_member: int = 4
    strangers_per_store: int = 40
    # Yale B has ~64 photos a person, each under another light: more of them show the store's
    # model what harsh light does to a face.
    yale_enrolment_photos: int = 12
    seed: int = 11


def plan_stores(plan: DemoPlan, home: Path | None = None) -> list[DemoStore]:
    """The three demo stores, the same for the same ``plan``."""
    rng = random.Random(plan.seed)
    noise = np.random.default_rng(plan.seed)
    wanted = plan.enrolment_photos + plan.probes_per_member
    all_lfw = lfw_people(home)
    lfw = {name: paths for name, paths in all_lfw.items() if len(paths) >= wanted}
    names = rng.sample(sorted(lfw), 2 * plan.members_per_store)
    singles = sorted(name for name, paths in all_lfw.items() if len(paths) == 1)
    # The first singles calibrate thresholds; strangers come from the rest.
    walk_ins = rng.sample(singles[DEFAULT_CALIBRATION_PEOPLE:], 2 * plan.strangers_per_store)

    stores: list[DemoStore] = []
    for index, camera in enumerate((CameraCondition.CLEAN, CameraCondition.LOW_RESOLUTION)):
        chosen = names[index * plan.members_per_store : (index + 1) * plan.members_per_store]
        strangers = walk_ins[
            index * plan.strangers_per_store : (index + 1) * plan.strangers_per_store
        ]

        def seen(path: Path, camera: CameraCondition = camera) -> Photo:
            return through_camera(load_image(path), camera, noise)

        members = [
            DemoMember(
                member_id=f"{camera.value[:3].upper()}-{number + 1:03d}",
                name=name.replace("_", " "),
                enrolment=[seen(p) for p in lfw[name][: plan.enrolment_photos]],
                probes=[seen(p) for p in lfw[name][plan.enrolment_photos : wanted]],
            )
            for number, name in enumerate(chosen)
        ]
        stores.append(
            DemoStore(
                f"store-{camera.value.replace('_', '-')}",
                camera.value,
                members,
                [seen(all_lfw[s][0]) for s in strangers],
            )
        )
    stores.append(_yale_store(plan, rng, home))
    return stores


def _yale_store(plan: DemoPlan, rng: random.Random, home: Path | None = None) -> DemoStore:
    people = yale_people(home, include_ambient=False)
    names = sorted(people)
    rng.shuffle(names)
    members_names = names[: plan.members_per_store]
    stranger_names = names[plan.members_per_store :]
    members: list[DemoMember] = []
    for number, name in enumerate(members_names):
        # The store's camera sees its members under every light, at enrolment too, so what
        # local training learns from is the lighting recognition has to cope with.
        photos = list(people[name])
        enrolment = rng.sample(photos, plan.yale_enrolment_photos)
        rest = [p for p in photos if p not in enrolment]
        probes = rng.sample(rest, plan.probes_per_member)
        members.append(
            DemoMember(
                member_id=f"YAL-{number + 1:03d}",
                name=name,
                enrolment=[load_image(p) for p in enrolment],
                probes=[load_image(p) for p in probes],
            )
        )
    per_stranger = max(1, plan.strangers_per_store // max(1, len(stranger_names)))
    strangers = [
        load_image(p) for name in stranger_names for p in rng.sample(people[name], per_stranger)
    ]
    return DemoStore("store-harsh-lighting", "harsh_lighting", members, strangers)
