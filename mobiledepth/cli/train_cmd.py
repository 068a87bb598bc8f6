"""`mobiledepth train`: the paper's recipe (ranking loss, heads, distillation, rebalancing)."""

from __future__ import annotations

import click

from mobiledepth.cli.options import compute_options


@click.command("train")
@click.option("--config", "config", default=None, type=click.Path(path_type=str),
              help="YAML config [default: the paper's DIW recipe, see docs/train.md].")
@click.option("--data", "data", default=None, type=click.Path(path_type=str), help="Dataset root (or train CSV).")
@click.option("--out", "out", default=None, type=click.Path(path_type=str), help="Run directory to create.")
@click.option("--resume", "resume", default=None, type=click.Path(path_type=str),
              help="Continue the run in this directory from checkpoints/last.pt.")
@click.option("--model", "model", default=None, metavar="NAME|SPEC.yaml|module:factory|CKPT",
              help="Student: zoo name, spec YAML, checkpoint or your own module:factory (docs/train.md).")
@click.option("--checkpoint", "checkpoint", default=None, type=click.Path(path_type=str),
              help="Weights to start from, for the --model named (e.g. a checkpoint of your factory's model).")
@click.option("--teacher", "teacher", default=None, help="Teacher for distillation: zoo name, checkpoint or module:factory.")
@click.option("--teacher-checkpoint", "teacher_checkpoint", default=None, type=click.Path(path_type=str),
              help="The teacher's weights, for the --teacher named (e.g. a checkpoint of your factory's model).")
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
@compute_options("--device", "Where it trains; under torchrun, this rank's GPU", dest="device")
@click.option("--workers", "workers", default=None, type=int,
              help="Data loader worker processes [default: from the CPU count on GPUs, 0 on the CPU].")
@click.option("--accumulate", "accumulate", default=None, type=int,
              help="Split each process's share of a batch into N parts (gradients accumulated) [default: 1].")
@click.option("--compile/--no-compile", "compile_model", default=None, help="torch.compile the model [default: off].")
@click.option("--channels-last/--no-channels-last", "channels_last", default=None,
              help="channels_last memory layout [default: on for CUDA].")
@click.option("--qat", "qat", is_flag=True, default=None,
              help="Quantisation-aware fine-tuning of the trained checkpoint --model for int8 (docs/train.md).")
def train(config, data, out, resume, model, checkpoint, teacher, teacher_checkpoint, epochs, steps, minutes, batch_size, lr, input_size, seed,
          rebalance, threads, skip_bad, device, precision, workers, accumulate, compile_model, channels_last,
          qat=None) -> int:
    """Train a depth model on DIW-format data; Ctrl-C saves a checkpoint, --resume continues it."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from mobiledepth.cli.options import parse_input_size
    from mobiledepth.errors import UserError
    from mobiledepth.train.trainer import prepare, run

    if resume and (out or config):
        raise UserError("--resume RUN_DIR continues a run with its saved config; drop --out/--config")
    overrides = {
        "model": model, "init_checkpoint": checkpoint, "teacher": teacher,
        "teacher_checkpoint": teacher_checkpoint, "epochs": epochs, "max_steps": steps, "max_minutes": minutes,
        "batch_size": batch_size, "optimizer.lr": lr, "seed": seed, "rebalance.enabled": rebalance,
        "threads": threads, "input_size": list(parse_input_size(input_size)) if input_size else None,
        "data.skip_bad": skip_bad, "device": device, "precision": precision, "data.workers": workers,
        "accumulate": accumulate, "compile": compile_model, "channels_last": channels_last,
    }
    if qat:
        return _qat(config, data, out, resume, overrides)
    setup = prepare(config, data=data, out=out, resume=resume, **overrides)  # every check before the bar
    console = Console(soft_wrap=True, quiet=not setup.world.is_main)  # under torchrun, rank 0 speaks
    for note in setup.notes:
        console.print(note)
    images, pairs = setup.skipped()
    if images or pairs:
        console.print(f"--skip-bad: dropped {images} image(s) and {pairs} pair(s) (see 'mobiledepth data check')")
    columns = [TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[terms]}")]
    with Progress(*columns, console=console, transient=False, disable=not setup.world.is_main) as bar:
        task = bar.add_task("train", total=None, epoch="-", terms="")

        def show(update) -> None:
            event = update.info
            if update.event == "step":
                terms = "  ".join(f"{k} {v:.4f}×{event['weights'][k]:.3f}" for k, v in event["loss"].items())
                bar.update(task, completed=update.done, total=update.total, epoch=event["epoch"],
                           terms=f"{terms}  lr {event['lr']:.2e}")
            elif update.event == "epoch" and "val_whdr" in event:
                bar.console.print(f"epoch {event['epoch']}: val WHDR {event['val_whdr']:.4f} ({event['val_pairs']} pairs)")
            elif update.event == "final":
                bar.console.print(f"step {event['step']} (the saved model): val WHDR {event['val_whdr']:.4f} "
                                  f"({event['val_pairs']} pairs)")

        result = run(setup, progress=show)
    if result.interrupted:
        console.print(f"interrupted at step {result.steps}/{result.total_steps}; saved {result.last_checkpoint}. "
                      f"Continue with: mobiledepth train --resume {result.run_dir}")
        return 130
    val = f", val WHDR {result.val_whdr:.4f}" if result.val_whdr is not None else ""
    console.print(f"{result.stopped}: {result.steps}/{result.total_steps} steps in {result.seconds:.0f} s{val}; "
                  f"model {result.model_path}; metrics {result.run_dir / 'metrics.jsonl'}")
    return 0


def _qat(config, data, out, resume, overrides: dict) -> int:
    """`train --qat`: fine-tune a trained checkpoint with fake quantisation of the export's graph (exact rewrites
    included), then save the fp32 weights and the quantised program (mobiledepth.train.qat)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from mobiledepth.errors import UserError
    from mobiledepth.export.rewrites import phase_split_upsampling
    from mobiledepth.train.config import resolve_config
    from mobiledepth.train.qat import prepare_qat, run_qat

    if resume:
        raise UserError("--qat runs are short and do not resume; start a new one with --out")
    if data is None or out is None or overrides.get("model") is None:
        raise UserError("--qat needs --model CHECKPOINT (a trained model.pt), --data DIR and --out RUN_DIR")
    cfg = resolve_config(config, **{**overrides, "qat.enabled": True})
    setup = prepare_qat(cfg, data, out, rewrite=phase_split_upsampling)  # every check before the bar
    console = Console(soft_wrap=True)
    with Progress(TextColumn("[bold]qat"), BarColumn(), MofNCompleteColumn(), console=console) as bar:
        task = bar.add_task("qat", total=None)
        result = run_qat(setup, lambda update: bar.update(task, completed=update.done, total=update.total))
    whdr = "".join(f", val WHDR {name} {value:.4f}" for name, value in
                   (("fp32", result.val_whdr_fp32), ("int8 (fake-quantised)", result.val_whdr_qat)) if value is not None)
    console.print(f"qat: {result.steps} steps in {result.seconds:.0f} s{whdr}; model {result.model_path} "
                  f"(export it with --precision int8)")
    return 0
