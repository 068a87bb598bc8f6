"""How long NetAdapt's planning takes on a ``module:factory`` model: one estimate, and one iteration's candidate
search, with the cut model traced per estimate (before issue 12's fix) and with substitution (after).

    .venv/bin/python benchmarks/factory_planning.py --lut runs/unet16/lut.json   # BasicUNet + its table
    .venv/bin/python benchmarks/factory_planning.py --model benchmarks.public_models:flexible_unet

Per estimate (median of ``--repeats`` widths per group, several groups): *traced* is the path every estimate took
before (copy the model, cut it to the width with Torch-Pruning, trace the deployed form); *substituted* is
``FactorySubject.layers`` (the uncut trace with the group's channel counts substituted), timed after its one probe
trace per group, which is reported on its own. With ``--lut``: one iteration's candidate search
(``netadapt.candidate_width`` for every prunable group at 95 % of the model's estimate) on fresh subjects, in the
same run and alternating: traced; substituted, probes included (a run probes once, at its start); substituted
with the maps already there (every iteration of a run). All must choose the same widths with the same estimates.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _subject(ref: str, size):
    from mobiledepth.arch.resolve import resolve_model
    from mobiledepth.prune.subject import FactorySubject

    resolved = resolve_model(ref)
    return FactorySubject(ref, resolved.model.eval(), resolved.spec_hash, tuple(size))


class TracedSubject:
    """The estimate before the fix: every width traced (a cache-free FactorySubject.traced)."""

    def __init__(self, subject):
        self.subject, self.bisect = subject, True

    def allowed(self, widths) -> bool:
        return True

    def estimate(self, table, widths=None, input_size=None):
        size = tuple(input_size or table.meta["input_size"])
        self.subject._traces.clear()
        return table.estimate_layers(self.subject.traced(size, widths or {}))


def _ms(seconds: list[float]) -> float:
    return statistics.median(seconds) * 1000.0


def per_estimate(ref: str, size, groups_sampled: int, repeats: int) -> dict:
    """Median ms of one estimate's layer list, traced vs substituted, and of one probe."""
    subject = _subject(ref, size)
    subject.traced(size)
    groups = [g for g in subject.groups() if g.prunable]
    groups = groups[:: max(1, len(groups) // groups_sampled)][:groups_sampled]
    traced, substituted, probes = [], [], []
    for group in groups:
        start = time.perf_counter()
        subject._width_map(group.name, size)
        probes.append(time.perf_counter() - start)
        for k in range(1, repeats + 1):
            widths = {group.name: max(1, group.width * k // (repeats + 1))}
            start = time.perf_counter()
            subject.traced(size, widths)
            traced.append(time.perf_counter() - start)
            start = time.perf_counter()
            layers = subject.layers(widths, size)
            substituted.append(time.perf_counter() - start)
            assert layers == subject.traced(size, widths)
    return {"groups": len(groups), "estimates": len(traced), "traced_ms": _ms(traced),
            "substituted_ms": _ms(substituted), "probe_ms": _ms(probes)}


def planning(ref: str, size, lut_path: str, rounds: int) -> dict:
    """One iteration's candidate search for every prunable group, traced vs substituted (fresh subjects)."""
    from mobiledepth.prune.lut import load_table
    from mobiledepth.prune.netadapt import candidate_width, table_multiple

    table = load_table(lut_path)
    multiple = table_multiple(table)
    times = {"traced": [], "substituted": [], "shared": []}
    chosen, probed = {}, {}  # probed: the width maps the "substituted" subject made (kinds run in this order)
    for _ in range(rounds):
        for kind in times:
            subject = _subject(ref, size)
            if kind == "shared":  # a later iteration: the run's maps are already there
                subject.width_maps = probed
            target = 0.95 * subject.estimate(table).total_us
            searcher = TracedSubject(subject) if kind == "traced" else subject
            start = time.perf_counter()
            chosen[kind] = [candidate_width(table, searcher, g, target, multiple, multiple, size)
                            for g in subject.groups() if g.prunable]
            times[kind].append(time.perf_counter() - start)
            probed = subject.width_maps
    assert chosen["traced"] == chosen["substituted"] == chosen["shared"], "the paths chose differently"
    return {"groups": len(chosen["traced"]), "rounds": rounds, **{f"{k}_s": statistics.median(v) for k, v in times.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="benchmarks.public_models:basic_unet")
    parser.add_argument("--size", default="64x64")
    parser.add_argument("--lut", default=None, help="a table of the model (lut build): time the candidate search too")
    parser.add_argument("--groups", type=int, default=6, help="groups sampled for the per-estimate times")
    parser.add_argument("--repeats", type=int, default=3, help="widths per sampled group")
    parser.add_argument("--rounds", type=int, default=3, help="candidate searches per path")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    one = per_estimate(args.model, size, args.groups, args.repeats)
    print(f"{args.model} {args.size}: one estimate's layers, median of {one['estimates']} ({one['groups']} groups): "
          f"traced {one['traced_ms']:.1f} ms, substituted {one['substituted_ms']:.3f} ms "
          f"({one['traced_ms'] / one['substituted_ms']:.0f}x); one probe per group {one['probe_ms']:.1f} ms")
    if args.lut:
        plan = planning(args.model, size, args.lut, args.rounds)
        print(f"candidate search, {plan['groups']} groups, median of {plan['rounds']}: traced {plan['traced_s']:.2f} s, "
              f"substituted with the probes (once per run) {plan['substituted_s']:.2f} s "
              f"({plan['traced_s'] / plan['substituted_s']:.1f}x), with the run's maps {plan['shared_s']:.3f} s "
              f"({plan['traced_s'] / plan['shared_s']:.0f}x); same widths and estimates")


if __name__ == "__main__":
    main()
