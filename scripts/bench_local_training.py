"""Time local training rounds on Extended Yale B crops and report the loss and a before/after
identification check, as one JSON object.

    .venv/bin/python scripts/bench_local_training.py            # 10 members x 5 crops, 3 rounds
    .venv/bin/python scripts/bench_local_training.py --epochs 5 --rounds 1

One store enrols the first ``--members`` Yale people from their ``--crops`` most frontally lit
photos (consent to model improvement), then runs ``--rounds`` rounds, each starting from the
previous round's backbone (one store: FedAvg is the identity). Identification: ``--probes``
other photos of each member, spread over every lighting, rank-1 against the members'
templates, with the pretrained model and after adopting the final one. Torch runs on
``--threads`` threads (1 by default: the store's budget).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from store_node.config import StoreConfig, StorePaths, write_config
from store_node.datasets.yale import yale_lighting, yale_people
from store_node.enrolment import EnrolmentRequest, enrol_member, prominent_faces
from store_node.face import FacePipeline
from store_node.face.weights import load_mobilefacenet
from store_node.gallery import Gallery, Purpose
from store_node.retemplate import adopt_model, recognition_pipeline
from store_node.training import TrainingConfig, backbone_state, fine_tuned_version
from store_node.training.local import train_store_round


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--crops", type=int, default=5)
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--learning-rate", type=float, default=TrainingConfig.learning_rate)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    pipeline = FacePipeline.load()
    people = dict(sorted(yale_people(include_ambient=False).items())[: args.members])
    with tempfile.TemporaryDirectory(prefix="loyalnet-bench-") as folder:
        store = Path(folder) / "store"
        store.mkdir()
        paths = StorePaths(store)
        write_config(paths, StoreConfig(store_id="bench"))
        probes: dict[str, list[Path]] = {}
        with Gallery.create(paths.database, paths.key) as gallery:
            for name, photos in people.items():
                enrol_photos, probes[name] = _choose(pipeline, photos, args.crops, args.probes)
                request = EnrolmentRequest(
                    name,
                    frozenset({Purpose.RECOGNITION, Purpose.MODEL_IMPROVEMENT}),
                    "2026-11",
                    365,
                )
                enrol_member(gallery, pipeline, request, enrol_photos)
            before = _rank1(gallery, pipeline, probes)

        config = TrainingConfig(
            local_epochs=args.epochs, learning_rate=args.learning_rate, seed=args.seed
        )
        backbone = backbone_state(load_mobilefacenet())
        rounds = []
        for index in range(args.rounds):
            started = time.perf_counter()
            outcome = train_store_round(store, backbone, config)
            assert outcome.backbone is not None, outcome.declined
            backbone = outcome.backbone
            rounds.append(
                {
                    "round": index + 1,
                    "seconds": round(time.perf_counter() - started, 2),
                    "loss_first_epoch": round(outcome.loss_first_epoch, 4),
                    "loss_last_epoch": round(outcome.loss_last_epoch, 4),
                    "examples": outcome.examples,
                }
            )
        adopted = adopt_model(store, backbone, fine_tuned_version(backbone))
        with Gallery.open(paths.database, paths.key) as gallery:
            after = _rank1(gallery, recognition_pipeline(store), probes)

    print(
        json.dumps(
            {
                "members": len(people),
                "crops_per_member": args.crops,
                "threads": args.threads,
                "epochs_per_round": args.epochs,
                "rounds": rounds,
                "seconds_per_round": round(float(np.mean([r["seconds"] for r in rounds])), 2),
                "loss_drop": round(
                    rounds[0]["loss_first_epoch"] - rounds[-1]["loss_last_epoch"], 4
                ),
                "rank1_before": before,
                "rank1_after": after,
                "adopted_version": adopted.model_version,
            },
            indent=2,
        )
    )


def _choose(
    pipeline: FacePipeline, photos: list[Path], enrol: int, probe: int
) -> tuple[list[Path], list[Path]]:
    """The ``enrol`` most frontally lit photos with one face, then ``probe`` others spread over
    every lighting (every k-th of the rest, from frontal to side-lit)."""
    by_light = sorted(photos, key=lambda p: sum(abs(a) for a in yale_lighting(p)))
    usable = [p for p in by_light if len(prominent_faces(pipeline.detect(p))) == 1]
    rest = usable[enrol:]
    step = max(1, len(rest) // max(probe, 1))
    return usable[:enrol], rest[::step][:probe]


def _rank1(gallery: Gallery, pipeline: FacePipeline, probes: dict[str, list[Path]]) -> float:
    """Share of probe photos whose best-scoring member is the right one."""
    hits = total = 0
    for name, photos in probes.items():
        for photo in photos:
            encodings = pipeline.encode(photo)
            if not encodings:
                continue
            match = gallery.identify(encodings[0].embedding[None], pipeline.model_version, 1.0)
            hits += match[0].candidate_id == name
            total += 1
    return round(hits / max(total, 1), 4)


if __name__ == "__main__":
    main()
