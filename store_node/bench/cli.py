"""``loyalnet bench``: run the benchmarks from the command line."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

bench_app = typer.Typer(
    help="Measure the face pipeline on public benchmarks (data from the shared data folder).",
    no_args_is_help=True,
)


@bench_app.callback()
def _bench() -> None:
    # A callback keeps `lfw` a named sub-command even while it is the only command.
    """Measure the face pipeline on public benchmarks (data from the shared data folder)."""


@bench_app.command("lfw")
def lfw(
    folds: Annotated[
        int, typer.Option(min=2, max=10, help="Number of View 2 folds to run (2-10).")
    ] = 10,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print only the result as JSON on stdout.")
    ] = False,
    flip: Annotated[
        bool | None,
        typer.Option(
            "--flip/--no-flip",
            help="Average in the mirrored face's embedding (twice the cost); default: the "
            "pipeline's default.",
            show_default=False,
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(min=1, help="Torch CPU threads; default: the pipeline's own choice."),
    ] = None,
) -> None:
    """LFW View 2 verification: 10-fold accuracy, TAR at FAR, and speed per image and face."""
    # Imported here so that `loyalnet --help` does not pay for loading torch.
    from store_node.bench.lfw import run_lfw_benchmark
    from store_node.face import FacePipeline

    pipeline = (
        FacePipeline.load(threads=threads)
        if flip is None
        else FacePipeline.load(flip=flip, threads=threads)
    )
    if as_json:
        result = run_lfw_benchmark(pipeline, folds=folds)
        typer.echo(json.dumps(result, indent=2))
        return
    stderr = Console(stderr=True)
    with Progress(
        TextColumn("LFW images"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=stderr,
        transient=True,
    ) as progress:
        task = progress.add_task("lfw", total=None)

        def report(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        result = run_lfw_benchmark(pipeline, folds=folds, progress=report)
    Console().print(summary_table(result))


def summary_table(result: dict[str, Any]) -> Table:
    """The benchmark result as a two-column table for people."""
    table = Table(title="LFW View 2 verification", show_header=False)
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    per_fold = ", ".join(f"{100 * a:.2f}" for a in result["accuracy_per_fold"])
    no_face = result["no_face"]
    rows = [
        ("accuracy", f"{100 * result['accuracy_mean']:.2f}% ± {100 * result['accuracy_std']:.2f}"),
        ("per fold (%)", per_fold),
        ("TAR @ FAR 1e-3", f"{100 * result['tar_at_far_1e-3']:.2f}%"),
        ("TAR @ FAR 1e-2", f"{100 * result['tar_at_far_1e-2']:.2f}%"),
        ("pairs / images / folds", f"{result['pairs']} / {result['images']} / {result['folds']}"),
        (
            "no face at default threshold",
            f"{no_face['count']} ({no_face['recovered_low_threshold']} by retry, "
            f"{no_face['centre_fallback']} centre fallback)",
        ),
        ("detect ms / image", f"{result['detect_ms_per_image']:.1f}"),
        ("align ms / face", f"{result['align_ms_per_face']:.2f}"),
        ("embed ms / face", f"{result['embed_ms_per_face']:.2f}"),
        ("model", str(result["model_version"])),
        ("flip / threads", f"{result['flip']} / {result['threads']}"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


@bench_app.command("stream")
def stream(
    members: Annotated[
        int, typer.Option(min=1, max=500, help="LFW members enrolled, each walking by once.")
    ] = 24,
    strangers: Annotated[
        int, typer.Option(min=0, max=2000, help="LFW strangers walking by, never enrolled.")
    ] = 24,
    yale_members: Annotated[
        int,
        typer.Option(
            min=0,
            max=38,
            help="Extended Yale B members, enrolled lit from the front, seen lit from the side.",
        ),
    ] = 4,
    orl_strangers: Annotated[
        int, typer.Option(min=0, max=40, help="ORL strangers (one photo each).")
    ] = 4,
    yale_azimuth: Annotated[
        tuple[int, int],
        typer.Option(
            help="The side light the Yale members are seen under: lowest and highest azimuth "
            "in degrees (the data set has 20, 25, 35, 50, 60, ...).",
        ),
    ] = (20, 25),
    detect_side: Annotated[
        int,
        typer.Option(min=64, max=1920, help="The detector's working size: longer side in pixels."),
    ] = 320,
    seed: Annotated[int, typer.Option(help="Draws the people and the script.")] = 0,
    fusion: Annotated[
        list[str] | None,
        typer.Option(
            help="Fusion of a visit's best frames: mean or vote; repeat to compare both on "
            "the same video (the first gives the main numbers).",
            show_default="mean",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print only the result as JSON on stdout.")
    ] = False,
) -> None:
    """The store's camera service on a scripted entrance video made from LFW photos.

    Enrols the members (LFW, and Extended Yale B lit from the front) in a temporary store,
    renders a 640x480 video at 25 fps in which every member (on a photo not enrolled; the
    Yale members lit from the side) and every stranger (LFW, ORL) walks through once, up to
    three at a time, a fifth under simulated low light, and runs the real camera path on it
    as fast as it goes. Prints frames per second, milliseconds per stage, visits found,
    members named correctly, strangers accepted and memory. About 2 minutes at the defaults.
    """
    from store_node.bench.stream import run_stream_benchmark
    from store_node.camera.fusion import FUSIONS

    chosen = fusion or ["mean"]
    unknown = [name for name in chosen if name not in FUSIONS]
    if unknown:
        raise typer.BadParameter(f"unknown fusion {', '.join(unknown)}; use mean or vote")
    stderr = Console(stderr=True)
    with stderr.status("starting…") as status:
        result = run_stream_benchmark(
            members=members,
            strangers=strangers,
            yale_members=yale_members,
            orl_strangers=orl_strangers,
            yale_probe_azimuth=yale_azimuth,
            seed=seed,
            detect_side=detect_side,
            fusions=chosen,
            on_step=lambda text: status.update(f"{text}…"),
        )
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    table = Table(title="camera service on a scripted entrance video", show_header=False)
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    stages = ", ".join(f"{k} {v:.1f}" for k, v in result["ms_per_stage"].items())
    for name, value in (
        ("frames per second", f"{result['fps']:.1f}"),
        ("ms per frame by stage", stages),
        ("visits found", f"{result['visits_found']} of {result['visits_total']}"),
        ("extra visits (split tracks)", str(result["visits_extra"])),
        ("members named correctly", f"{result['members_correct']} of {result['members_total']}"),
        ("strangers accepted", f"{result['strangers_accepted']} of {result['strangers_total']}"),
        (
            "memory (MB): peak, at 1/4, at end",
            f"{result['peak_rss_mb']:.0f}, "
            f"{result['rss_mb_quarter']:.0f}, {result['rss_mb_end']:.0f}",
        ),
    ):
        table.add_row(name, value)
    Console().print(table)
