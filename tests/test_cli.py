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
    assert join_multi_value_flags(["phantom", "out", "--shape", "24", "x", "160", "more"]) == ["phantom", "out", "--shape=[24,x,160]", "more"]


def test_boolean_flag_values():
    """``--mask_region false`` reaches fire as the string "false", which Python counts as true."""
    assert [as_bool(v, "f") for v in (True, False, "false", "False", "no", "0", "true", "YES", "1")] == [
        True, False, False, False, False, False, True, True, True,
    ]
    with pytest.raises(ValueError, match="--mask_region: expected true or false, got 'maybe'"):
        as_bool("maybe", "mask_region")


def test_phantoms_evaluated_against_themselves_are_perfect(tmp_path, cascade_in_process):
    cascade = cascade_in_process
    made = cascade("phantom", str(tmp_path / "ph"), "--cases", "4", "--shape", "24", "160", "160", "--spacing", "2.5", "1.25", "1.25")
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


@pytest.mark.parametrize("args", [["evaluate", "/nonexistent/pred", "/nonexistent/gt", "--out", "x"], ["datalist", "/nonexistent"]])
def test_errors_are_one_line_and_exit_1(args):
    result = cascade(*args)  # a fresh interpreter: whatever importing prints would show here too
    assert result.returncode == 1
    assert [line for line in result.stderr.splitlines() if line.strip()] == [
        line for line in result.stderr.splitlines() if line.startswith("cascade: error:")
    ]


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
