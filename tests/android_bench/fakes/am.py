"""Stand-in for ``am start -S -n org.tensorflow.lite.benchmark/.BenchmarkModelActivity --es args STR``.

Runs the stand-in benchmark_model with the args and appends its output to the phone's logcat
(threadtime format, tag ``tflite``), as the benchmark APK does. ``am force-stop`` is accepted.
"""

import contextlib
import io
import os
import shlex
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import benchmark_model  # noqa: E402

PACKAGE = "org.tensorflow.lite.benchmark"


def main(argv):
    root = Path(os.environ["FAKE_DEVICE_ROOT"])
    if argv[:1] == ["force-stop"]:
        return 0
    if argv[:1] != ["start"] or "--es" not in argv:
        print(f"am: unsupported {argv}", file=sys.stderr)
        return 1
    component = argv[argv.index("-n") + 1]
    installed = (root / "installed.txt").read_text().split() if (root / "installed.txt").exists() else []
    if component.split("/")[0] not in installed:
        print(f"Error: Activity class {{{component}}} does not exist.")
        return 1
    args = shlex.split(argv[argv.index("--es") + 2])
    print(f"Starting: Intent {{ cmp={component} }}")
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        benchmark_model.main(args)
    with open(root / "logcat.txt", "a") as log:
        for line in captured.getvalue().splitlines():
            text = line.removeprefix("INFO: ")
            log.write(f"12-01 10:00:00.000  4242  4260 I tflite  : {text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
