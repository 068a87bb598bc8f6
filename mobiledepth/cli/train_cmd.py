"""`mobiledepth train`: the paper's recipe (ranking loss, heads, distillation, rebalancing)."""

from __future__ import annotations

import click


@click.command("train")
@click.option("--config", "config", default=None, type=click.Path(path_type=str),
              help="YAML config [default: the paper's DIW recipe, see docs/train.md].")
@click.option("--data", "data", default=None, type=click.Path(path_type=str), help="Dataset root (or train CSV).")
@click.option("--out", "out", default=None, type=click.Path(path_type=str), help="Run directory to create.")
@click.option("--resume", "resume", default=None, type=click.Path(path_type=str),
              help="Continue the run in this directory from checkpoints/last.pt.")
@click.option("--model", "model", default=None, help="Student: zoo name, spec YAML or checkpoint.")
@click.option("--teacher", "teacher", default=None, help="Teacher for distillation: zoo name or checkpoint.")
@click.option("--epochs", "epochs", default=None, type=int, help="Epochs [default: the config's; 5 in the paper's recipe].")
@click.option("--steps", "steps", default=None, type=int, help="Stop after this many steps in total.")
@click.option("--minutes", "minutes", default=None, type=float, help="Stop (with a checkpoint) after this long.")
@click.option("--batch-size", "batch_size", default=None, type=int, help="Images per step [default: the config's; 4].")
@click.option("--lr", "lr", default=None, type=float, help="Learning rate [default: the config's; 1e-4].")
@click.option("--input-size", "input_size", default=None, help="HxW, multiples of 32 (e.g. 224x448).")
@click.option("--seed", "seed", default=None, type=int, help="Seed of the init and the data order [default: the config's; 0].")
@click.option("--rebalance/--no-rebalance", "rebalance", default=None, help="Lee & Kim loss rebalancing.")
@click.option("--threads", "threads", default=None, type=int, help="torch threads.")
@click.option("--skip-bad", "skip_bad", is_flag=True, default=None,
              help="Drop invalid samples and undecodable images instead of failing (the count is shown).")
def train(config, data, out, resume, model, teacher, epochs, steps, minutes, batch_size, lr, input_size, seed,
          rebalance, threads, skip_bad) -> int:
    """Train a depth model on DIW-format data; Ctrl-C saves a checkpoint, --resume continues it."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from mobiledepth.cli.options import parse_input_size
    from mobiledepth.errors import UserError
    from mobiledepth.train.trainer import prepare, run

    if resume and (out or config):
        raise UserError("--resume RUN_DIR continues a run with its saved config; drop --out/--config")
    overrides = {
        "model": model, "teacher": teacher, "epochs": epochs, "max_steps": steps, "max_minutes": minutes,
        "batch_size": batch_size, "optimizer.lr": lr, "seed": seed, "rebalance.enabled": rebalance,
        "threads": threads, "input_size": list(parse_input_size(input_size)) if input_size else None,
        "data.skip_bad": skip_bad,
    }
    setup = prepare(config, data=data, out=out, resume=resume, **overrides)  # every check before the bar
    console = Console(soft_wrap=True)
    images, pairs = setup.skipped()
    if images or pairs:
        console.print(f"--skip-bad: dropped {images} image(s) and {pairs} pair(s) (see 'mobiledepth data check')")
    columns = [TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[terms]}")]
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("train", total=None, epoch="-", terms="")

        def show(update) -> None:
            event = update.info
            if update.event == "step":
                terms = "  ".join(f"{k} {v:.4f}×{event['weights'][k]:.3f}" for k, v in event["loss"].items())
                bar.update(task, completed=update.done, total=update.total, epoch=event["epoch"],
                           terms=f"{terms}  lr {event['lr']:.2e}")
            elif update.event == "epoch" and "val_whdr" in event:
                bar.console.print(f"epoch {event['epoch']}: val WHDR {event['val_whdr']:.4f} ({event['val_pairs']} pairs)")

        result = run(setup, progress=show)
    if result.interrupted:
        console.print(f"interrupted at step {result.steps}/{result.total_steps}; saved {result.last_checkpoint}. "
                      f"Continue with: mobiledepth train --resume {result.run_dir}")
        return 130
    val = f", val WHDR {result.val_whdr:.4f}" if result.val_whdr is not None else ""
    console.print(f"{result.stopped}: {result.steps}/{result.total_steps} steps in {result.seconds:.0f} s{val}; "
                  f"model {result.model_path}; metrics {result.run_dir / 'metrics.jsonl'}")
    return 0
