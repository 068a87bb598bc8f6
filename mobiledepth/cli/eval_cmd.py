"""`mobiledepth eval`: WHDR of a torch / ONNX / TFLite model on a DIW-format dataset."""

from __future__ import annotations

import click

from mobiledepth.cli.options import store_choice, store_options


@click.command("eval")
@click.option("--model", "model", default=None, metavar="NAME|SPEC.yaml|module:factory|FILE",
              help="Zoo name, spec YAML, your own module:factory, checkpoint (.pt), .onnx or .tflite file.")
@click.option("--checkpoint", "checkpoint", default=None, type=click.Path(path_type=str),
              help="Weights for the --model named (a factory's or a zoo model's); alone: the model it stores.")
@click.option("--backend", "backend", default=None, type=click.Choice(["torch", "onnx", "tflite"]),
              help="Runtime [default: from the file suffix; a zoo name is torch].")
@click.option("--data", "data", required=True, type=click.Path(path_type=str), help="Dataset root or CSV.")
@click.option("--split", "split", default="test", show_default=True, help="CSV to use when --data is a folder.")
@click.option("--batch-size", "batch_size", default=8, show_default=True, type=int, help="Images per batch.")
@click.option("--input-size", "input_size", default=None,
              help="HxW for torch models [default: the checkpoint's, else the spec's, else 224x448].")
@click.option("--disparity", is_flag=True, help="The model outputs disparity (larger = nearer): flip the sign.")
@click.option("--skip-bad", "skip_bad", is_flag=True,
              help="Drop invalid samples and undecodable images instead of failing (the count is shown).")
@click.option("--limit", "limit", default=None, type=int, help="Evaluate the first N images only.")
@click.option("--json", "as_json", is_flag=True, help="Print the eval record as JSON instead of a table.")
@click.option("--out", "out", default=None, type=click.Path(path_type=str), help="Write the eval record here.")
@click.option("--seed", "seed", default=None, type=int,
              help="Seed of the random weights of a zoo model without a checkpoint [default: 0].")
@click.option("--device", "device", default=None,
              help="Torch models: auto | cpu | cuda | cuda:N | mps [default: cpu]. Under torchrun every "
                   "process evaluates its share of the images and rank 0 writes the summed result.")
@store_options
def eval_(model: str | None, checkpoint: str | None, backend: str | None, data: str, split: str, batch_size: int, input_size: str | None,
          disparity: bool, skip_bad: bool, limit: int | None, as_json: bool, out: str | None, seed: int | None,
          store_path: str | None, no_store: bool, device: str | None) -> int:
    """Measure WHDR (strict: a predicted tie counts as an error) of MODEL on a DIW-format dataset."""
    import json
    import os

    from rich.console import Console
    from rich.progress import Progress

    from mobiledepth.cli.options import parse_input_size
    from mobiledepth.errors import UserError
    from mobiledepth.evaluate.evaluate import prepare_evaluation, run_evaluation

    if model is None and checkpoint is None:
        raise UserError("eval needs --model (a zoo name, spec YAML, module:factory or model file) or --checkpoint")
    size = parse_input_size(input_size) if input_size else None
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be at least 1, got {limit}")
    setup = prepare_evaluation(model, data, backend=backend, split=split, batch_size=batch_size, input_size=size,
                               depth_like=not disparity, skip_bad=skip_bad, limit=limit, out=out, seed=seed,
                               store=store_choice(store_path, no_store), device=device, checkpoint=checkpoint)
    with Progress(transient=True, disable=as_json) as bar:  # drawn only once every check has passed
        task = bar.add_task("evaluating", total=None)
        result = run_evaluation(setup, progress=lambda event: bar.update(task, completed=event.done, total=event.total))
    if result.world_size > 1 and os.environ.get("RANK", "0") != "0":
        return 0  # under torchrun, rank 0 reports
    record = result.record()
    stored = result.stored
    if as_json:
        click.echo(json.dumps(record, indent=2))
        return 0
    console = Console(soft_wrap=True)
    ds = record["dataset"]
    if ds["skipped_images"] or ds["skipped_pairs"]:
        console.print(f"--skip-bad: dropped {ds['skipped_images']} image(s) and {ds['skipped_pairs']} pair(s) "
                      "(see 'mobiledepth data check')")
    if record["random_weights"]:
        console.print(f"random weights (untrained {model}, seed {record['seed']}): not a trained model's accuracy")
    console.print(f"WHDR {record['value']:.4f}  ({record['correct']}/{record['pairs']} pairs correct)  "
                  f"{record['backend']} {record['precision'] or ''}  {model or checkpoint}"
                  + (f" + {checkpoint}" if model and checkpoint else ""))
    console.print(f"dataset {ds['name']} ({ds['images']} images, sha256 {ds['hash'][:12]}), input "
                  f"{record['input_size'][0]}x{record['input_size'][1]}, {result.seconds:.1f} s"
                  + (f"; record: {out}" if out else "") + (f"; stored in {stored}" if stored else ""))
    return 0
