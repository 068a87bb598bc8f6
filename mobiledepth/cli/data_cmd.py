"""`mobiledepth data`: generate a synthetic DIW-format dataset, validate a dataset."""

from __future__ import annotations

import click


@click.group("data")
def data() -> None:
    """DIW-format datasets: generate synthetic scenes, validate annotations."""


@data.command("synth")
@click.option("--out", "out", required=True, type=click.Path(path_type=str), help="Dataset root to write.")
@click.option("--n", "n", required=True, type=int, help="Number of images.")
@click.option("--size", "size", default="128x128", show_default=True, help="Image size HxW.")
@click.option("--seed", "seed", default=0, show_default=True, type=int, help="Seed (scene i depends on seed, split, i).")
@click.option("--split", "split", default="train", show_default=True, type=click.Choice(["train", "test", "val"]),
              help="Which split to write.")
@click.option("--pairs-per-image", "pairs", default=None, type=int,
              help="Point pairs per image [default: 8 for train, 1 for test/val].")
@click.option("--gray-fraction", "gray", default=0.05, show_default=True, type=float,
              help="Fraction of images stored grayscale (as some DIW images are).")
@click.option("--overwrite", is_flag=True, help="Replace an existing split in --out.")
def synth(out: str, n: int, size: str, seed: int, split: str, pairs: int | None, gray: float, overwrite: bool) -> None:
    """Render procedural scenes with dense depth and write them as a DIW-format split."""
    from rich.console import Console
    from rich.progress import Progress

    from mobiledepth.data.synth import generate, parse_size

    hw = parse_size(size)
    bar = Progress(transient=True)
    task = bar.add_task(f"rendering {split}", total=n)

    def show(event) -> None:  # the bar appears with the first scene, after every check
        bar.start()
        bar.update(task, completed=event.done)

    try:
        result = generate(out, n, hw, seed=seed, split=split, pairs_per_image=pairs, gray_fraction=gray,
                          overwrite=overwrite, progress=show)
    finally:
        if bar.live.is_started:
            bar.stop()
    Console(soft_wrap=True).print(f"wrote {result.images} images, {result.pairs} pairs ({split}, {hw[0]}x{hw[1]}, seed {seed}) "
                    f"to {result.out} in {result.seconds:.1f} s; annotations: {result.csv}")


@data.command("check")
@click.argument("dataset", type=click.Path(path_type=str))
@click.option("--split", "split", default=None, help="Pick the CSV whose name (without DIW_) starts with this, e.g. train or test.")
@click.option("--no-files", "no_files", is_flag=True, help="Skip checking that every image exists.")
@click.option("--show", "show", default=10, show_default=True, type=int, help="Problems to list.")
def check(dataset: str, split: str | None, no_files: bool, show: int) -> int:
    """Validate a DIW-format dataset: report every problem at once (exit 2 if any)."""
    from rich.console import Console
    from rich.table import Table

    from mobiledepth.data.diw import validate
    from mobiledepth.errors import UserError

    report = validate(dataset, split=split, check_files=not no_files)
    console = Console(soft_wrap=True)
    if report.ok:
        console.print(f"ok: {report.csv} — {report.images} images, {report.pairs} pairs, no problems")
        return 0
    table = Table(title=f"{len(report.problems)} problem(s) in {report.csv}")
    table.add_column("line", justify="right")
    table.add_column("kind")
    table.add_column("problem")
    for problem in report.problems[:show]:
        table.add_row(str(problem.line), problem.kind, problem.message)
    console.print(table)
    counts = ", ".join(f"{k}: {v}" for k, v in sorted(report.counts().items()))
    console.print(f"{report.images} images, {report.pairs} pairs; problems by kind: {counts}.")
    # exit 1 is reserved for `check`'s regression verdict: a dataset with problems is bad input (2)
    raise UserError(f"{len(report.problems)} problem(s) in {report.csv}; fix the CSV, or train/evaluate "
                    "with --skip-bad to drop bad samples")


data.add_command(check, "validate")
