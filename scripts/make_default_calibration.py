"""Measure the impostor scores that loyalnet ships as the default threshold calibration.

Run after changing the face pipeline (detector, alignment, embedder or its weights):

    .venv/bin/python scripts/make_default_calibration.py

It embeds the first 1,500 LFW people with a single photo (nobody that demos or benchmarks
enrol) and writes store_node/calibration/<model_version>.json: a quantile table of similarity
scores, no images and no embeddings.
"""

from __future__ import annotations

from pathlib import Path

from rich.progress import Progress

from store_node.face import FacePipeline
from store_node.threshold import calibration_people, measure_impostor_scores


def main() -> None:
    pipeline = FacePipeline.load()
    people = calibration_people()
    with Progress() as bar:
        task = bar.add_task("embedding strangers", total=None)
        scores = measure_impostor_scores(
            pipeline,
            people,
            f"LFW, first {len(people)} people with a single photo",
            lambda done, total: bar.update(task, completed=done, total=total),
        )
    target = Path(__file__).resolve().parent.parent / "store_node" / "calibration"
    path = target / f"{scores.model_version}.json"
    path.write_text(scores.to_json(), encoding="utf-8")
    print(f"wrote {path} ({scores.pairs} impostor pairs)")


if __name__ == "__main__":
    main()
