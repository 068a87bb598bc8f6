"""``mobiledepth prune``: NetAdapt pruning to a latency measured on a device."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from android_bench.profiles import DELEGATES, delegate_help
from mobiledepth.cli.options import compute_options


@click.command("prune")
@click.option("--model", "-m", default=None,
              help="Spec of the checkpoint (default: the one stored in it), or your module:factory (given again "
                   "with --resume).")
@click.option("--checkpoint", "-c", type=click.Path(path_type=Path), default=None, help="Trained weights (.pt).")
@click.option("--target-ms", type=float, default=None,
              help="Latency budget on the device, ms (converted through the unpruned model timed alongside).")
@click.option("--target-ratio", type=float, default=None,
              help="Or: the budget as a fraction of the unpruned model's latency (e.g. 0.6).")
@click.option("--measure-rounds", type=int, default=20, show_default=True,
              help="Interleaved rounds (candidate vs the unpruned model) before the first look at the interval.")
@click.option("--max-measure-rounds", type=int, default=200, show_default=True,
              help="At most this many rounds while the interval straddles the target.")
@click.option("--device", "-d", default="host", show_default=True, help="host or a phone profile (S21, ...).")
@click.option("--delegate", type=click.Choice(DELEGATES), default="cpu", show_default=True, help=delegate_help())
@click.option("--threads", type=int, default=1, show_default=True, help="Threads (benchmark_model --num_threads / the interpreter).")
@click.option("--data", type=click.Path(path_type=Path), default=None, help="DIW-format data (train + held-out split).")
@click.option("--lut", "lut_path", type=click.Path(path_type=Path), default=None,
              help="Lookup table JSON (default: build it for the model, size, device and delegate).")
@click.option("--input-size", default=None, help="Deploy HxW, where latency is measured (default: the spec's).")
@click.option("--train-input-size", default=None, help="HxW for fine-tuning and WHDR (default: --input-size).")
@click.option("--short-term-steps", type=int, default=100, show_default=True, help="Fine-tune steps per proposal.")
@click.option("--long-term-steps", type=int, default=500, show_default=True, help="Fine-tune steps at the end.")
@click.option("--initial-reduction", type=float, default=0.025, show_default=True, help="First step, fraction of R0.")
@click.option("--decay", type=float, default=0.96, show_default=True, help="Step decay per iteration.")
@click.option("--workers", type=int, default=None,
              help="Proposals evaluated in parallel processes (default: one per GPU on CUDA, else 1; more than "
                   "the GPUs share them round-robin; a resumed run keeps its own).")
@compute_options("--train-device", "Where the fine-tunes and held-out WHDR run (a resumed run keeps its own)")
@click.option("--multiple", type=int, default=None,
              help="Widths stay multiples of this (default: the lookup table's own --multiple; a resumed run keeps its own).")
@click.option("--min-width", type=int, default=8, show_default=True, help="No group below this width.")
@click.option("--batch-size", type=int, default=4, show_default=True, help="Images per fine-tuning step.")
@click.option("--lr", type=float, default=1e-4, show_default=True, help="Fine-tuning learning rate.")
@click.option("--val-split", default="test", show_default=True, help="Held-out split for WHDR.")
@click.option("--val-limit", type=int, default=None, help="Use only the first N held-out images.")
@click.option("--max-iterations", type=int, default=100, show_default=True,
              help="Give up after this many NetAdapt iterations if --target-ms is still not met.")
@click.option("--seed", type=int, default=None,
              help="Seed of the fine-tunes (default 0; a resumed run keeps its own unless given).")
@click.option("--min-proposals", type=int, default=3, show_default=True,
              help="Halve an iteration's step while fewer groups than this can make it alone (NetAdapt needs a choice).")
@click.option("--choose", type=click.Choice(["accuracy", "loss-per-ms"]), default=None,
              help="Winning proposal: lowest WHDR, or smallest WHDR loss per ms saved (default: accuracy; "
                   "a resumed run keeps its own).")
@click.option("--store", "store_path", type=click.Path(path_type=Path), default=None, help="Store file (default: the shared store).")
@click.option("--no-store", is_flag=True, help="Do not put the results in the store.")
@click.option("--out", "-o", type=click.Path(path_type=Path), default=None, help="Run directory (default: runs/prune-<model>-<T>ms).")
@click.option("--resume", type=click.Path(path_type=Path), default=None, help="Continue the run in RUN_DIR.")
def prune(model, checkpoint, target_ms, target_ratio, measure_rounds, max_measure_rounds, device, delegate, threads,
          data, lut_path, input_size, train_input_size,
          short_term_steps, long_term_steps, initial_reduction, decay, workers, multiple, min_width, batch_size, lr,
          val_split, val_limit, max_iterations, seed, min_proposals, choose, store_path, no_store, out, resume,
          compute_device=None, precision=None) -> None:
    """Shrink a model, channel group by channel group, until the upper confidence bound of its
    latency on DEVICE (timed interleaved with the unpruned model) is under --target-ms / --target-ratio."""
    from mobiledepth.cli.options import parse_input_size
    from mobiledepth.errors import UserError
    from mobiledepth.prune import netadapt

    console = Console()
    store = False if no_store else store_path
    progress = _progress_printer(console, device)
    if resume is not None:
        result = netadapt.resume(resume, workers=workers, choose=choose, store=store, progress=progress,
                                 train_device=compute_device, precision=precision, model=model, seed=seed)
    else:
        missing = [name for name, value in (("--checkpoint", checkpoint), ("--data", data)) if value is None]
        if target_ms is None and target_ratio is None:
            missing.append("--target-ms or --target-ratio")
        if missing:
            raise UserError(f"prune needs {', '.join(missing)} (or --resume RUN_DIR); see 'mobiledepth prune --help'")
        settings = netadapt.PruneSettings(
            model=model, checkpoint=str(checkpoint), target_ms=target_ms, target_ratio=target_ratio, data=str(data),
            measure_rounds=measure_rounds, max_measure_rounds=max_measure_rounds,
            lut=str(lut_path) if lut_path else None, device=device, delegate=delegate, threads=threads,
            input_size=parse_input_size(input_size) if input_size else None,
            train_input_size=parse_input_size(train_input_size) if train_input_size else None,
            short_term_steps=short_term_steps, long_term_steps=long_term_steps, initial_reduction=initial_reduction,
            decay=decay, workers=workers, train_device=compute_device or "auto", precision=precision or "auto",
            multiple=multiple, min_width=min_width, batch_size=batch_size, lr=lr,
            val_split=val_split, val_limit=val_limit, max_iterations=max_iterations, choose=choose or "accuracy",
            min_proposals=min_proposals,
            seed=0 if seed is None else seed)
        result = netadapt.prune(settings, out=out, store=store, progress=progress)
    final = result.record["final"]
    measured = "not measured"
    if final.get("measured"):
        m = final["measured"]
        measured = (f"{m['ratio']:.3f}x the unpruned model (95 % CI {m['low']:.3f}-{m['high']:.3f}, target "
                    f"{m['target_ratio']:.3f}), {final['measured_ms']:.3f} ms measured")
    console.print(f"[green]done[/]: {result.run_dir} — {measured} (target {result.record['target_ms']:g} ms), "
                  f"estimate {final['estimated_ms']:.3f} ms, WHDR {final['whdr']:.4f}, "
                  f"{len(result.record['iterations']) - 1} iterations", highlight=False)


def _progress_printer(console: Console, device: str):
    """Render the stage's progress events as console lines."""

    def progress(update) -> None:
        event, info = update.event, update.info
        if event == "proposal":
            status = f"WHDR {info['whdr']:.4f}" if info.get("ok") else f"[red]failed[/] {info.get('error')}"
            console.print(f"  iter {info['iteration']}: {info['group']} -> {info['width']}: {status}", highlight=False)
        elif event == "proposals":
            console.print(f"iteration {info['iteration']}: target {info['target_ms']:.3f} ms, {info['count']} proposals",
                          highlight=False)
        elif event == "iteration":
            chosen = info.get("chosen")
            what = f"{chosen['group']} -> {chosen['width']}" if chosen else "start"
            measured = f", measured {info['measured_ms']:.3f} ms" if info.get("measured_ms") is not None else ""
            if info.get("measured"):
                m = info["measured"]
                measured += f" ({m['ratio']:.3f}x, CI {m['low']:.3f}-{m['high']:.3f}, {'met' if m['met'] else 'not met'})"
            console.print(f"[bold]iteration {info['iteration']}[/]: {what}; estimate {info['estimated_ms']:.3f} ms"
                          f"{measured}; WHDR {info['whdr']:.4f}", highlight=False)
        elif event == "measure":
            console.print(f"  exporting and timing on {device} ({info['iteration']}) ...", style="dim")
        elif event == "final_missed":
            console.print(f"the long-term model's upper bound {info['high']:.3f}x misses the target "
                          f"{info['target_ratio']:.3f}x: NetAdapt goes on", highlight=False)
        elif event == "long_term":
            console.print(f"long-term fine-tune ({info['steps']} steps) ...", style="dim")
        elif event == "warning":
            click.echo(f"warning: {update.detail}", err=True)
        elif event == "lut":
            console.print(f"no --lut given: building the lookup table for {info['model']} on "
                          f"{info['device']}/{info['delegate']} ...")

    return progress
