"""Record factories (export.json, bench.json results, eval and prune records) made with the real
constructors (android_bench's ``new_result``, ``mobiledepth.records.new_record``), model cards,
and a store at an older schema version."""

from __future__ import annotations

import hashlib

import numpy as np

from mobiledepth.records import new_record


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def weights_fields(random_weights: bool | None, seed: int | None) -> dict:
    """``random_weights`` / ``seed`` as export and eval records carry them; nothing for ``None``
    (a record written before the fields existed)."""
    return {} if random_weights is None else {"random_weights": random_weights, "seed": seed}


def export_record(name: str, spec_hash: str, params: int, macs: int, precisions=("fp32", "fp16"),
                  size=(256, 256), ckpt: str | None = None, random_weights: bool | None = False,
                  seed: int | None = None, ordinal: dict | None = None) -> dict:
    """An export.json as the export stage writes it (one artifact per precision); ``ordinal`` sets a
    precision's ordinal agreement (int8 has no parity bar: ``passed`` None, ``bar`` {})."""
    ordinal = ordinal or {}
    return {**weights_fields(random_weights, seed), **new_record("export", created_at="2026-11-24T10:00:00+00:00"),
        "model": {"name": name, "source": f"runs/{name}/model.pt", "spec_hash": spec_hash, "params": params,
                  "macs": macs, "checkpoint": "model.pt", "checkpoint_sha256": ckpt or sha(f"ckpt-{name}")},
        "input_size": list(size),
        "artifacts": [
            {"path": f"model_{p}.tflite", "format": "tflite", "precision": p, "layout": "NHWC",
             "input_shape": [1, size[0], size[1], 3], "output_shape": [1, size[0], size[1], 1],
             "size_bytes": params * (4 if p == "fp32" else 2), "sha256": sha(f"{name}-{p}"),
             "parity": {"max_abs_err_rel": 1e-5, "mean_abs_err_rel": 1e-6, "ordinal_agreement": ordinal.get(p, 0.999),
                        "passed": None if p == "int8" else True,
                        "bar": {} if p == "int8" else {"max_abs_err_rel": 1e-3, "ordinal_agreement": 0.999}}}
            for p in precisions
        ],
        "versions": {"torch": "2.13.0", "tensorflow": "2.19.0"},
        "timings_s": {"onnx": 1.2, "tflite": 8.5},
    }


def bench_result(artifact: str, name: str | None, device: str, delegate: str, median_us: float, seed: int,
                 precision: str = "fp32", fallback: bool = False, failed: bool = False, runs: int = 50,
                 serial: str | None = None) -> dict:
    """A BenchResult made by android_bench's own ``new_result``; samples drawn around ``median_us``."""
    from android_bench.result import empty_stats, new_result, stats_from_samples

    rng = np.random.default_rng(seed)
    samples = [] if failed else [float(round(v, 1)) for v in median_us * rng.lognormal(0, 0.05, runs)]
    phone = device != "host"
    result = new_result(
        artifact_sha256=artifact, model_path=f"/data/local/tmp/{name or 'model'}.tflite", model_name=name,
        precision=precision, delegate=delegate, threads=4 if delegate == "cpu" else 1, tool="benchmark_model",
        tool_version="2.19.0", runs=runs, warmup=5, samples_us=samples, samples_kind="per_run",
        stats=stats_from_samples(samples) if samples else empty_stats(), init_us=None if failed else 15000.0,
        first_inference_us=None if failed else median_us * 1.5, warmup_avg_us=None if failed else median_us * 1.1,
        fallback=fallback, failed=failed, error="Failed to apply NNAPI delegate." if failed else None,
        started_at=f"2026-11-24T10:{seed % 60:02d}:00Z", duration_s=12.0,
    )
    result["device"].update(profile=device, serial=serial or ("R5CR10ABCDE" if phone else None),
                            model_code="SM-G991B" if phone else None, soc="Exynos 2100" if phone else None,
                            android="13" if phone else None)
    result["memory"].update(init_mb=3.1, overall_mb=20.5)
    result["delegation"].update(status="none" if fallback else ("full" if delegate != "cpu" else None),
                                delegated_nodes=0 if fallback else None, total_nodes=120)
    return result


def bench_record(results: list[dict]) -> dict:
    return new_record("bench", created_at="2026-11-24T11:00:00Z", results=results)


def eval_record(artifact: str, name: str, value: float, backend: str = "tflite", pairs: int = 1000,
                random_weights: bool | None = False, seed: int | None = None) -> dict:
    correct = int(round((1 - value) * pairs))
    return {**weights_fields(random_weights, seed), **new_record(
        "eval", created_at="2026-11-24T12:00:00Z", model_path=f"runs/{name}/m", artifact_sha256=artifact,
        model_name=name, backend=backend, precision="fp32",
        dataset={"name": "diw-synthetic", "root": "/data/diw", "hash": sha("diw"), "images": pairs, "pairs": pairs},
        metric="whdr", value=1 - correct / pairs, correct=correct, pairs=pairs)}


PAPER_CARD = """\
name: {name}
architecture: {{encoder: {{type: mobilenetv2}}, decoder: {{type: fbnet, stages: []}}}}
card:
  reported:
    params_m: 2.6
    whdr: 0.1156
    latency_ms:
      "Galaxy S21": {{cpu: 54, gpu: 27, nnapi: 43}}
"""




def prune_record(model: str = "mdepth-tiny", device: str = "host", delegate: str = "cpu", target_ms: float = 2.0,
                 steps=((3.4, 3.6, 0.06, None), (3.0, None, 0.07, ("dec.stage3.hidden", 112)),
                        (2.5, None, 0.09, ("enc.stage1", 8)), (1.9, 2.05, 0.12, ("dec.stage1.hidden", 168))),
                 final=(1.9, 1.95, 0.10), created_at: str = "2026-11-24T17:24:15+00:00") -> dict:
    """A prune.json as ``mobiledepth prune`` writes it: ``steps`` are (estimated_ms, measured_ms, whdr, chosen)."""
    iterations = []
    for i, (estimated, measured, whdr, chosen) in enumerate(steps):
        iterations.append({
            "iteration": i, "estimated_ms": estimated, "measured_ms": measured, "whdr": whdr,
            "widths": {"enc.stage1": 8 if i >= 2 else 24, "dec.stage3.hidden": 112 if i else 136},
            "chosen": None if chosen is None else {"group": chosen[0], "width": chosen[1]},
            "checkpoint": f"iter_{i:03d}/model.pt", "finished_at": f"2026-11-24T17:{25 + i:02d}:00+00:00",
            **({} if i == 0 else {"target_ms": estimated + 0.2, "proposals": [
                {"group": chosen[0], "width": chosen[1], "estimated_ms": estimated, "ok": True, "whdr": whdr,
                 "error": None}]}),
        })
    record = new_record(
        "prune", created_at=created_at, status="running",
        model={"name": model, "checkpoint": "trained.pt", "checkpoint_sha256": sha(f"start-{model}"),
               "spec_hash": sha(f"spec-{model}")},
        device=device, delegate=delegate, target_ms=target_ms, input_size=[128, 128],
        lut={"path": "lut.json", "runtime": "ai-edge-litert 2.1.0"},
        settings={"target_ms": target_ms, "device": device, "delegate": delegate, "workers": 1,
                  "choose": "accuracy", "measure": True},
        floor_ms=0.66, iterations=iterations, updated_at="2026-11-24T17:30:20+00:00",
    )
    if final is not None:
        estimated, measured, whdr = final
        record.update(status="done", finished_at="2026-11-24T17:30:20+00:00", final={
            "checkpoint": "final/model.pt", "whdr": whdr, "widths": iterations[-1]["widths"],
            "estimated_ms": estimated, "measured_ms": measured, "export_dir": "final/export", "long_term_steps": 300})
    return record


def old_store(path, version: int, fill) -> "Store":
    """A store at schema ``version`` holding what ``fill(store)`` ingests into a current store: the rows
    are copied column by column (the columns that version has), as that mobiledepth wrote them."""
    from mobiledepth.store import Store, _connect, migrate, open_store

    current = path.with_name(f"current-{path.name}")
    with open_store(current) as st:
        fill(st)
    conn = _connect(path)
    migrate(conn, target=version)
    conn.execute("ATTACH DATABASE ? AS cur", (str(current),))
    for table in ("artifacts", "bench_results", "evals"):
        columns = ", ".join(r[1] for r in conn.execute(f"PRAGMA main.table_info({table})"))
        conn.execute(f"INSERT INTO main.{table} ({columns}) SELECT {columns} FROM cur.{table}")
    conn.execute("DETACH DATABASE cur")
    return Store(path, conn)
