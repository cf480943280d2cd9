"""The command line as users type it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cascade.cli import as_bool, join_multi_value_flags


def cascade(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cascade.cli", *args], capture_output=True, text=True, timeout=600)


def test_multi_value_flags_are_joined():
    assert join_multi_value_flags(["phantom", "out", "--shape", "24", "160", "160", "--cases", "2"]) == [
        "phantom", "out", "--shape=[24,160,160]", "--cases", "2",
    ]
    assert join_multi_value_flags(["evaluate", "--out", "dir", "a", "b"]) == ["evaluate", "--out", "dir", "a", "b"]
    assert join_multi_value_flags(["phantom", "out", "--shape", "24", "x", "160", "more"]) == [
        "phantom", "out", "--shape=[24,x,160]", "more"
    ]


def test_boolean_flag_values():
    """``--mask_region false`` reaches fire as the string "false", which Python counts as true."""
    assert [as_bool(v, "f") for v in (True, False, "false", "False", "no", "0", "true", "YES", "1")] == [
        True, False, False, False, False, False, True, True, True,
    ]
    with pytest.raises(ValueError, match="--mask_region: expected true or false, got 'maybe'"):
        as_bool("maybe", "mask_region")


def test_phantoms_evaluated_against_themselves_are_perfect(tmp_path, cascade_in_process):
    cascade = cascade_in_process
    made = cascade(
        "phantom", str(tmp_path / "ph"), "--cases", "4", "--shape", "24", "160", "160",
        "--spacing", "2.5", "1.25", "1.25",
    )
    assert made.returncode == 0, made.stderr
    scored = cascade("evaluate", str(tmp_path / "ph"), str(tmp_path / "ph"), "--out", str(tmp_path / "ev"))
    assert scored.returncode == 0, scored.stderr
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    for name in ("wall", "right_atrium", "left_atrium"):
        assert summary[name]["dice"]["mean"] == 1.0 and summary[name]["dice"]["n_valid"] == 4
        assert summary[name]["hd95_mm"]["mean"] == 0.0 and summary[name]["hd95_monai_vox"]["mean"] == 0.0

    listed = cascade("datalist", str(tmp_path / "ph"), "--folds", "2", "--out", str(tmp_path / "dl.json"))
    assert listed.returncode == 0, listed.stderr
    entries = json.loads((tmp_path / "dl.json").read_text())["training"]
    assert sorted(e["fold"] for e in entries) == [0, 0, 1, 1]


@pytest.mark.parametrize(
    "args", [["evaluate", "/nonexistent/pred", "/nonexistent/gt", "--out", "x"], ["datalist", "/nonexistent"]]
)
def test_errors_are_one_line_and_exit_1(args):
    result = cascade(*args)  # a fresh interpreter: whatever importing prints would show here too
    assert result.returncode == 1
    [line] = [line for line in result.stderr.splitlines() if line.strip()]  # one line, not none
    assert line.startswith("cascade: error: /nonexistent") and "not found" in line, line  # naming the missing path


@pytest.mark.parametrize(
    "args, message",
    [
        (["datalist", ".", "--folds", "abc"], "--folds: expected a number, got 'abc'"),
        (["datalist", ".", "--folds", "2.5"], "--folds: expected a whole number, got 2.5"),
        (["datalist", ".", "--seed", "-3"], "--seed: expected a value in [0, 4294967295], got -3"),
        (["phantom", "ph", "--cases", "abc"], "--cases: expected a number, got 'abc'"),
        (["phantom", "ph", "--cases", "1.5"], "--cases: expected a whole number, got 1.5"),
        (["phantom", "ph", "--shape", "24", "x", "160"], "--shape: expected a number, got 'x'"),
        (["phantom", "ph", "--shape", "24", "160"], "--shape: expected three values (Z Y X)"),
        (["phantom", "ph", "--spacing", "2.5", "0", "1"], "--spacing: expected a value in [0.01, 100.0], got 0"),
        (["evaluate", "ph", "ph", "--out", "ev", "--workers", "abc"], "--workers: expected a number, got 'abc'"),
        (["crossval", "ph", "--work", "w", "--folds", "1"], "--folds: expected a value in [2, 1000], got 1"),
        (["demo", "--out", "d", "--cases", "0"], "--cases: expected a value in [1, 1000], got 0"),
    ],
)
def test_numeric_flags_are_checked_before_any_work(tmp_path, monkeypatch, cascade_in_process, args, message):
    monkeypatch.chdir(tmp_path)
    result = cascade_in_process(*args)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"cascade: error: {message}")
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_number_like_paths_stay_paths(tmp_path, monkeypatch, cascade_in_process):
    """fire reads `2024` as a number; folder names like it must work as any other."""
    monkeypatch.chdir(tmp_path)
    made = cascade_in_process("phantom", "2024", "--cases", "1", "--shape", "12", "48", "48")
    assert made.returncode == 0, made.stderr
    scored = cascade_in_process("evaluate", "2024", "2024", "--out", "2025")
    assert scored.returncode == 0, scored.stderr
    assert (tmp_path / "2025" / "summary.json").is_file()


def test_help_and_argument_errors_import_neither_torch_nor_monai(tmp_path):
    """Help and argument errors come before the heavy imports (seconds of CPU): a fresh interpreter
    runs main() on each and reports which of torch and MONAI got imported."""
    script = (
        "import sys\nfrom cascade.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as stop:\n    print('exit', stop.code)\n"
        "print('imported:', sorted(m for m in ('torch', 'monai') if m in sys.modules))\n"
    )
    missing = str(tmp_path / "missing")
    commands = (
        ["--help"], ["predict", "--help"], ["predcit", "a", "b"],
        ["predict", missing, missing, "--pretrained", "la2019"], ["phantom"],
        ["evaluate", "a", "b", "--out", "c", "--wokers", "2"],
    )
    for args in commands:
        result = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120)
        assert result.stdout.splitlines()[-1] == "imported: []", (args, result.stdout, result.stderr)
    assert list(tmp_path.iterdir()) == []


def test_help_lists_every_command_and_reads_like_a_cli():
    from cascade.cli import COMMANDS

    top = cascade("--help")
    assert top.returncode == 0 and top.stdout.startswith("usage: cascade COMMAND")
    for name in COMMANDS:
        assert f"\n  {name} " in top.stdout
    phantom = cascade("phantom", "--help")
    assert phantom.returncode == 0 and phantom.stderr == ""
    assert phantom.stdout.startswith("usage: cascade phantom OUT [options]\n")
    options = phantom.stdout.split("\noptions:\n", 1)[1]
    assert "--seed SEED" in options and "(default: 0)" in options  # optional, with its default
    assert "--shape Z Y X" in options and "(default: 44 576 576)" in options
    for clutter in ("Type:", "INFO:", "Optional[", "SYNOPSIS"):
        assert clutter not in phantom.stdout + top.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["predcit", "IN", "OUT"], "unknown command 'predcit' (did you mean `cascade predict`?)"),
        (["evalute"], "did you mean `cascade evaluate`?"),
        (["zzz"], "the commands are: demo, datalist"),
        (["predict", "IN"], "cascade predict: missing argument OUT (usage: cascade predict INPUT OUT [options])"),
        (["predict", "IN", "OUT", "--pretrained", "la2019"], "--pretrained la2019: no such shipped weights"),
        (["predict", "IN", "OUT", "--backend", "tensorflow"], "--backend tensorflow: expected one of torch, openvino"),
        (["predict", "IN", "OUT", "--precision", "fp32,fp8"], "--precision fp8: expected one of fp32, bf16, int8"),
        (["predict", "IN", "OUT", "--output_format", "png"],
         "--output_format png: expected one of nifti, dicom-seg, both"),
        (["predict", "IN", "OUT", "--demo", "--pretrained", "la2018"],
         "--demo and --pretrained la2018 exclude each other"),
    ],
)
def test_commands_and_arguments_are_checked_before_any_file(tmp_path, monkeypatch, cascade_in_process, args, message):
    """IN does not exist: every error here must come from the arguments, before the input is looked at."""
    monkeypatch.chdir(tmp_path)
    result = cascade_in_process(*args)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("cascade: error: ") and message in line, line
    assert list(tmp_path.iterdir()) == []
