"""Fixtures for the store / report / gate tests: realistic records and tiny TFLite models."""

from __future__ import annotations

from pathlib import Path

import pytest
from report_records import PAPER_CARD, bench_record, bench_result, eval_record, export_record

HERE = Path(__file__).resolve().parent


@pytest.fixture
def realistic_records() -> dict:
    """Two models on host and a phone, with a fallback, a failed run, a stale artifact and accuracies."""
    paper = export_record("mdepth-mnv2-fbnet", "spec-current", 2_600_000, 1_100_000_000)
    fast = export_record("fastdepth", "spec-old", 3_900_000, 1_200_000_000, precisions=("fp32",))
    pa, pb = paper["artifacts"][0]["sha256"], paper["artifacts"][1]["sha256"]
    fa = fast["artifacts"][0]["sha256"]
    results = [
        bench_result(pa, "mdepth-mnv2-fbnet", "host", "cpu", 21000, 1),
        bench_result(pa, "mdepth-mnv2-fbnet", "galaxy_s21", "cpu", 52000, 2),
        bench_result(pb, "mdepth-mnv2-fbnet", "galaxy_s21", "gpu", 26000, 3, precision="fp16"),
        bench_result(pa, "mdepth-mnv2-fbnet", "galaxy_s21", "nnapi", 0, 4, failed=True),
        bench_result(fa, "fastdepth", "host", "cpu", 30000, 5),
        bench_result(fa, "fastdepth", "galaxy_s21", "gpu", 61000, 6, fallback=True),
    ]
    evals = [eval_record(pa, "mdepth-mnv2-fbnet", 0.1210), eval_record(fa, "fastdepth", 0.1450),
             eval_record(paper["model"]["checkpoint_sha256"], "mdepth-mnv2-fbnet", 0.1190, backend="torch")]
    return {"exports": [paper, fast], "bench": bench_record(results), "evals": evals,
            "sha": {"paper_fp32": pa, "paper_fp16": pb, "fast": fa}}


@pytest.fixture
def card_dir(tmp_path) -> Path:
    d = tmp_path / "cards"
    d.mkdir()
    (d / "mdepth-mnv2-fbnet.yaml").write_text(PAPER_CARD.format(name="mdepth-mnv2-fbnet"))
    (d / "no-card.yaml").write_text("name: no-card\narchitecture: {encoder: {type: mobilenetv2}, decoder: {type: fbnet}}\n")
    return d


# --------------------------------------------------------------------------- tiny TFLite models

def _builders():
    import importlib.util

    path = HERE.parent / "android_bench" / "ab_tflite_models.py"
    spec = importlib.util.spec_from_file_location("ab_tflite_models_report", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny_tflites(tmp_path_factory) -> dict[str, Path]:
    """narrow: 2 convs x 8 ch; wide: 2 convs x 48 ch (many times the MACs); small: narrow at 32x32."""
    builders = _builders()
    builders.skip_without_converter()
    d = tmp_path_factory.mktemp("tflite")
    shapes = {"narrow": (64, 8), "wide": (64, 48), "small": (32, 8)}
    jobs = [{"kind": "conv", "path": d / f"{name}.tflite", "size": size, "channels": channels, "head_kernel": 1, "seed": 0}
            for name, (size, channels) in shapes.items()]
    return dict(zip(shapes, builders.build_tflites(jobs)))
