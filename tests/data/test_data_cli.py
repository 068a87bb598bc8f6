"""`mobiledepth data synth|check`: real runs and one-line errors with exit codes."""

from mobiledepth.cli import main


def test_synth_then_check_ok(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path), "--n", "3", "--size", "32x48", "--split", "test"]) == 0
    assert "wrote 3 images, 3 pairs" in capsys.readouterr().out
    assert main(["data", "check", str(tmp_path)]) == 0
    assert "no problems" in capsys.readouterr().out


def test_check_lists_problems_and_fails(tmp_path, capsys):
    (tmp_path / "d.csv").write_text("./a.thumb\n1,1,2,2,>,30,20\n./b.thumb\n1,1,2,2,?,30,20\n")
    assert main(["data", "validate", str(tmp_path / "d.csv")]) == 2
    out = capsys.readouterr().out
    assert "3 problem(s)" in out and "missing: 2" in out and "relation: 1" in out


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    cases = [
        ["data", "check", str(tmp_path / "nope")],
        ["data", "synth", "--out", str(tmp_path), "--n", "2", "--size", "big"],
        ["data", "synth", "--out", str(tmp_path), "--n", "0"],
    ]
    for argv in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
