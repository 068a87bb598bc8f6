"""The int8 bars (issue 16): values, margins, verdicts and the warning lines that say by how much."""

from mobiledepth.export.parity import INT8_BARS, int8_bar_warnings, int8_bars


def test_bars_met_have_positive_margins():
    bars = int8_bars(ordinal=0.995, latency_ratio=0.5, whdr_fp32=0.100, whdr_int8=0.103)
    assert all(bar["passed"] for bar in bars.values())
    assert abs(bars["ordinal_agreement"]["margin"] - 0.005) < 1e-12
    assert abs(bars["latency_ratio"]["margin"] - 0.1) < 1e-12
    assert abs(bars["whdr_delta"]["margin"] - 0.002) < 1e-12
    assert int8_bar_warnings("model_int8.tflite", bars) == []


def test_missed_bars_say_by_how_much():
    bars = int8_bars(ordinal=0.93, latency_ratio=0.75, whdr_fp32=0.100, whdr_int8=0.120)
    assert [bars[k]["passed"] for k in INT8_BARS] == [False, False, False]
    lines = int8_bar_warnings("model_int8.tflite", bars)
    # ordinal agreement has its own line (parity_warning); latency and WHDR each get one with the shortfall
    assert len(lines) == 2
    assert any("latency 0.7500" in line and "short by 0.1500" in line for line in lines)
    assert any("WHDR" in line and "short by 0.0150" in line for line in lines)


def test_unmeasured_bars_are_none_and_whdr_says_so():
    bars = int8_bars(ordinal=0.999, latency_ratio=None, whdr_fp32=None, whdr_int8=None)
    assert bars["latency_ratio"]["passed"] is None and bars["whdr_delta"]["passed"] is None
    lines = int8_bar_warnings("m.tflite", bars)
    assert len(lines) == 1 and "not measured" in lines[0] and "--eval-data DIR" in lines[0]
