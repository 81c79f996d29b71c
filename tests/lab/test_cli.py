"""``normkit lab`` on the command line: runs, and one-line errors for every bad input."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from normkit.cli import main

from .conftest import fake_images


def run_cli(argv, capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors exit directly
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, match):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert match in lines[0], lines[0]
    assert lines[0].startswith("normkit lab")


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["lab", "icz"], "invalid choice: 'icz'"),
        (["lab", "ics", "--steps", "0"], "--steps must be a positive integer, got 0"),
        (["lab", "ics", "--steps", "-5"], "--steps must be a positive integer, got -5"),
        (["lab", "ics", "--steps", "ten"], "argument --steps: expected an integer, got 'ten'"),
        (["lab", "ics", "--batch-size", "0"], "--batch-size must be a positive integer, got 0"),
        (["lab", "ics", "--batch-size", "1"], "--batch-size must be at least 2"),
        (["lab", "ics", "--batch-size", "100000"], "larger than the training set"),
        (["lab", "ics", "--batch-size", "8,16"], "ics takes one --batch-size value"),
        (["lab", "ics", "--lr", "0"], "--lr must be a positive number"),
        (["lab", "ics", "--lr", "abc"], "expected comma-separated numbers"),
        (["lab", "ics", "--eval-every", "0"], "--eval-every must be a positive integer"),
        (["lab", "ics", "--data", "imagenet"], "unknown dataset 'imagenet'"),
        (["lab", "ics", "--data", "missing/dir"], "does not exist"),
        (["lab", "ics", "--unit", "100"], "--unit must be in [0, 100)"),
        (["lab", "ics", "--threads", "0"], "--threads must be a positive integer"),
        (["lab", "all", "--steps", "0"], "--steps must be a positive integer"),
        (["lab", "report", "nowhere"], "has no results.json"),
    ],
)
def test_bad_input_is_one_line(argv, match, capsys):
    code, _, err = run_cli(argv, capsys)
    assert_one_line_error(code, err, match)


def test_unreadable_data_file(tmp_path, capsys):
    bad = tmp_path / "broken.npz"
    bad.write_bytes(b"PK\x03\x04 garbage")
    code, _, err = run_cli(["lab", "ics", "--data", str(bad), "--smoke"], capsys)
    assert_one_line_error(code, err, "truncated or not an .npz file")


def test_mislabelled_data_file(tmp_path, capsys):
    x, y = fake_images(20, 0)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=x, y_train=y[:10], x_test=x, y_test=y)
    code, _, err = run_cli(["lab", "ics", "--data", str(path), "--smoke"], capsys)
    assert_one_line_error(code, err, "x_train has 20 examples but y_train has 10 labels")


def test_output_path_is_a_file(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    code, _, err = run_cli(["lab", "ics", "--smoke", "--out", str(target)], capsys)
    assert_one_line_error(code, err, "exists and is not a directory")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only directories")
def test_output_path_not_writable(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    code, _, err = run_cli(["lab", "ics", "--smoke", "--out", str(locked / "run")], capsys)
    assert_one_line_error(code, err, "cannot write to output directory")


def test_output_path_under_proc(capsys):
    """A directory that cannot be created, even as root."""
    code, _, err = run_cli(["lab", "ics", "--smoke", "--out", "/proc/normkit-lab"], capsys)
    assert_one_line_error(code, err, "cannot write to output directory /proc/normkit-lab")


def test_list(capsys):
    code, out, _ = run_cli(["lab", "list"], capsys)
    assert code == 0
    for name in ("ics",):
        assert name in out


def test_ics_on_user_idx_files(mnist_dir, tmp_path, capsys):
    code, out, err = run_cli(
        [
            "lab",
            "ics",
            "--smoke",
            "--data",
            str(mnist_dir),
            "--batch-size",
            "16",
            "--out",
            str(tmp_path / "o"),
        ],
        capsys,
    )
    assert code == 0, err
    assert "mnist: 64 train / 32 test, input 1x8x8, 2 classes" in out
    assert (tmp_path / "o" / "report.html").is_file()


def test_report_command_rerenders(tmp_path, capsys):
    code, _, err = run_cli(["lab", "ics", "--smoke", "--out", str(tmp_path / "r")], capsys)
    assert code == 0, err
    (tmp_path / "r" / "report.html").unlink()
    code, out, err = run_cli(["lab", "report", str(tmp_path / "r")], capsys)
    assert code == 0, err
    assert (tmp_path / "r" / "report.html").is_file()
    assert f"report: {(tmp_path / 'r' / 'report.html').resolve()}" in out


def test_subprocess_run_prints_headline_and_report_path(tmp_path):
    """The real command, as `make demo` runs it (smoke size)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    proc = subprocess.run(
        [sys.executable, "-m", "normkit", "lab", "ics", "--smoke", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert ">> ics: with BN" in proc.stdout
    assert f"report: {(tmp_path / 'report.html').resolve()}" in proc.stdout
    assert "Traceback" not in proc.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "normkit", "lab", "ics", "--steps", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
    assert "Traceback" not in bad.stderr
