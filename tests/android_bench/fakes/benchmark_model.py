"""Stand-in for TensorFlow Lite's benchmark_model on an emulated phone.

Prints output in the real format (INFO:-prefixed lines, warm-up and regular stats lines
with percentiles, the summary, memory lines, delegation lines) for deterministic
pseudo-random run times, and writes what it printed plus the true per-run samples to
$FAKE_DEVICE_ROOT/bench_runs.jsonl so tests can compare the parser's answer with the truth.
The device's "fault" (see fakes/adb.py) selects a failure mode.
"""

import json
import math
import os
import random
import signal
import sys
import time
from pathlib import Path


def fmt(value):
    """C++ ostream default formatting of a double (6 significant digits)."""
    return format(value, ".6g")


def tool_stats(samples):
    n = len(samples)
    avg = sum(samples) / n
    std = math.sqrt(max(sum(s * s for s in samples) / n - avg * avg, 0.0))
    ordered = sorted(samples)
    pick = lambda q: ordered[min(n - 1, int(q / 100 * n))]  # noqa: E731
    return {
        "count": n, "first": samples[0], "curr": samples[-1], "min": min(samples), "max": max(samples),
        "avg": avg, "std": std, "p5": pick(5), "median": pick(50), "p95": pick(95),
    }


def stats_line(stats, percentiles=True):
    if stats["min"] == stats["max"]:
        return f"count={stats['count']} curr={stats['curr']}" + ("(all same)" if stats["count"] > 1 else "")
    text = (
        f"count={stats['count']} first={stats['first']} curr={stats['curr']} min={stats['min']} "
        f"max={stats['max']} avg={fmt(stats['avg'])} std={fmt(stats['std'])}"
    )
    if percentiles:
        text += f" p5={stats['p5']} median={stats['median']} p95={stats['p95']}"
    return text


CLASSIC_HELP = """usage: benchmark_model
Flags:
	--graph=			string	optional	graph file name
	--num_threads=-1		int32	optional	number of threads
	--use_xnnpack=false		bool	optional	explicitly apply the XNNPACK delegate
	--use_gpu=false			bool	optional	use gpu
	--use_nnapi=false		bool	optional	use nnapi delegate api
	--enable_op_profiling=false	bool	optional	enable op profiling
"""
LITERT2_HELP = """benchmark_model: LiteRT CompiledModel benchmark, version 2.1.0
  --graph (Path to the model file.); default: "";
  --use_cpu (Use CPU accelerator.); default: true;
  --use_gpu (Use GPU accelerator.); default: false;
  --use_npu (Use NPU accelerator.); default: false;
  --dispatch_library_path (Dispatch library path.); default: "";
  --compiler_plugin_library_path (Compiler plugin library path.); default: "";
  --require_full_delegation (Require full delegation.); default: false;
"""


def context():
    root = Path(os.environ["FAKE_DEVICE_ROOT"])
    state_file = Path(os.environ["FAKE_ADB_STATE"])
    state = json.loads(state_file.read_text())
    index = int(os.environ["FAKE_DEVICE_INDEX"])
    return root, state_file, state, index


def main(argv):
    flags = dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)
    root, state_file, state, index = context()
    device = state["devices"][index]
    fault = device.get("fault")
    with open(root / "bench_argv.jsonl", "a") as handle:
        handle.write(json.dumps(argv) + "\n")
    if "--help" in argv:
        print(LITERT2_HELP if device.get("tool") == "litert2" else CLASSIC_HELP)
        return 0
    if device.get("tool") == "litert2":
        return litert_main(flags, root, index, fault)
    out = sys.stdout
    say = lambda text: print(f"INFO: {text}", file=out, flush=True)  # noqa: E731
    say("STARTING!")
    graph = flags.get("graph", "")
    say(f"Graph: [{graph}]")
    if not os.path.isfile(graph):
        print(f"ERROR: Could not open '{graph}'.", file=out)
        print(f"ERROR: Failed to mmap model {graph}", file=out)
        print("ERROR: Benchmarking failed.", file=out)
        return 1
    say("Loaded model " + graph)
    say("Initialized TensorFlow Lite runtime.")
    delegate = "XNNPACK" if flags.get("use_xnnpack") == "true" else "GPU" if flags.get("use_gpu") == "true" else "NNAPI" if flags.get("use_nnapi") == "true" else None
    kernel_name = {"XNNPACK": "TfLiteXNNPackDelegate", "GPU": "TfLiteGpuDelegateV2", "NNAPI": "TfLiteNnapiDelegate"}.get(delegate)
    if delegate == "GPU":
        say("Created TensorFlow Lite delegate for GPU.")
    if delegate:
        if fault == "fallback_none" and delegate != "XNNPACK":
            print(f"Though {delegate} delegate is explicitly applied, the model graph will not be executed by the delegate.", file=out)
        elif fault == "refuses_depth_to_space" and delegate == "GPU":  # an older GPU delegate build
            print("ERROR: Following operations are not supported by GPU delegate:", file=out)
            print("DEPTH_TO_SPACE: Operation is not supported.", file=out)
            say("60 operations will run on the GPU, and the remaining 4 operations will run on the CPU.")
        elif fault == "fallback_partial" and delegate != "XNNPACK":
            say(f"Replacing 10 out of 14 node(s) with delegate ({kernel_name}) node, yielding 3 partitions for the whole graph.")
            print(f"Explicitly applied {delegate} delegate, and the model graph will be partially executed by the delegate w/ 3 delegate kernels.", file=out)
        else:
            say(f"Replacing 14 out of 14 node(s) with delegate ({kernel_name}) node, yielding 1 partitions for the whole graph.")
            print(f"Explicitly applied {delegate} delegate, and the model graph will be completely executed by the delegate.", file=out)
    if fault == "crash":
        out.flush()
        os.kill(os.getpid(), signal.SIGSEGV)
    say(f"The input model file size (MB): {os.path.getsize(graph) / 1e6:g}")
    counter = root / "invocations"
    calls = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(calls))
    rng = random.Random(1000 * index + calls)
    base = 1_500_000 if fault == "slow" else 40_000 + 5_000 * index
    init_us = rng.randint(20_000, 90_000)
    say(f"Initialized session in {init_us / 1000:g}ms.")
    warmup_n, runs_n = int(flags.get("warmup_runs", 1)), int(flags.get("num_runs", 50))
    if fault == "hang":
        time.sleep(3600)
    say("Running benchmark for at least %d iterations and at least 0.5 seconds but terminate if exceeding 150 seconds." % warmup_n)
    warm = [base + rng.randint(2_000, 9_000) for _ in range(max(warmup_n, 1))]
    say(stats_line(tool_stats(warm)) + "\n")
    if fault == "failed":
        print("ERROR: Node number 3 (CONV_2D) failed to invoke.", file=out)
        print("ERROR: Benchmarking failed.", file=out)
        return 1
    if fault == "disconnect":
        out.flush()
        state["devices"][index]["state"] = "gone"
        # atomically: the other phones' adb calls read this file concurrently (a plain write
        # let one of them read a truncated file and fail the healthy phone's run)
        partial = state_file.with_name(f"{state_file.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps(state))
        os.replace(partial, state_file)
        return 255
    say("Running benchmark for at least %d iterations and at least 1 seconds but terminate if exceeding 150 seconds." % runs_n)
    samples = [base + rng.randint(0, 3_000) for _ in range(runs_n)]
    stats = tool_stats(samples)
    say(stats_line(stats) + "\n")
    if flags.get("enable_op_profiling") == "true":
        print("Operator-wise Profiling Info for Regular Benchmark Runs:", file=out)
        print("============================== Run Order ==============================", file=out)
        print("\t[node type]\t[start]\t[first]\t[avg ms]\t[%]\t[cdf%]\t[mem KB]\t[times called]\t[Name]", file=out)
        print("\tCONV_2D\t0.000\t1.250\t1.200\t60.000%\t60.000%\t0.000\t1\t[encoder/conv0]", file=out)
        print("\tRESIZE_BILINEAR\t1.201\t0.810\t0.800\t40.000%\t100.000%\t0.000\t1\t[decoder/up]", file=out)
        print("", file=out)
    say(
        f"Inference timings in us: Init: {init_us}, First inference: {warm[0]}, "
        f"Warmup (avg): {fmt(sum(warm) / len(warm))}, Inference (avg): {fmt(stats['avg'])}"
    )
    say("Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.")
    say("Memory footprint delta from the start of the tool (MB): init=3.51562 overall=12.8945")
    if flags.get("report_peak_memory_footprint") == "true":
        say("Overall peak memory footprint (MB) via periodic monitoring: 14.3828")
    with open(root / "bench_runs.jsonl", "a") as handle:
        handle.write(json.dumps({"samples": samples, "printed": stats_line(stats), "init_us": init_us, "first": warm[0]}) + "\n")
    return 0



def litert_main(flags, root, index, fault):
    """The LiteRT 2.x CompiledModel tool: ms under BENCHMARK RESULTS, no delegation line (SPEC §7b)."""
    say = lambda text: print(f"INFO: [benchmark_litert_model.cc:98] {text}", flush=True)  # noqa: E731
    strict = flags.get("require_full_delegation") == "true"
    if strict and flags.get("use_cpu", "true") == "true":
        print("ERROR: [benchmark_litert_model.cc:141] Requesting full delegation and CPU acceleration are incompatible")
        return 1
    say(f"Loading model from {flags.get('graph')}")
    if not os.path.isfile(flags.get("graph", "")):
        print("ERROR: [benchmark_litert_model.cc:101] Failed to load model")
        return 1
    accelerator = "GPU" if flags.get("use_gpu") == "true" else "NPU" if flags.get("use_npu") == "true" else None
    loaded = accelerator is not None and fault != "not_loaded" and _npu_libs_ok(accelerator, flags)
    if accelerator and not loaded:
        print(f"WARNING: [{accelerator.lower()}_registry.cc:34] {accelerator} accelerator could not be loaded and registered.")
    if strict and (not loaded or fault == "fallback_partial"):
        print("ERROR: [compiled_model.cc:1036] Model is not fully accelerated")
        return 1
    if fault == "failed":
        print("ERROR: [benchmark_litert_model.cc:210] Failed to invoke the compiled model")
        return 1
    rng = random.Random(7 + index)
    runs = int(flags.get("num_runs", 50))
    samples = [(12.0 if loaded else 40.0) + rng.random() for _ in range(runs)]
    avg = sum(samples) / runs
    std = math.sqrt(max(sum(x * x for x in samples) / runs - avg * avg, 0.0))
    lines = ["", "========== BENCHMARK RESULTS ==========", "Model initialization: 41.07 ms",
             f"Warmup (first):       {samples[0] + 2:.2f} ms", f"Warmup (avg):         {avg + 1:.2f} ms (1 runs)",
             f"Inference (avg):      {avg:.2f} ms ({runs} runs)", f"Inference (min):      {min(samples):.2f} ms",
             f"Inference (max):      {max(samples):.2f} ms", f"Inference (std):      {std:.2f}", "",
             "Memory Usage:", "Init footprint:       9.87 MB", "Overall footprint:    23.02 MB",
             "Peak memory usage not available.", "======================================"]
    for number, line in enumerate(lines, start=60):
        print(f"INFO: [benchmark_litert_model.h:{number}] {line}")
    with open(root / "bench_runs.jsonl", "a") as handle:
        handle.write(json.dumps({"samples_ms": samples, "strict": strict, "env": dict(os.environ)}) + "\n")
    return 0


def _npu_libs_ok(accelerator, flags):
    """The NPU loads only when the dispatch library is where the flag and LD_LIBRARY_PATH say."""
    if accelerator != "NPU":
        return True
    folder = flags.get("dispatch_library_path", "")
    return bool(folder) and folder in os.environ.get("LD_LIBRARY_PATH", "") and any(Path(folder).glob("libLiteRtDispatch_*.so"))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
