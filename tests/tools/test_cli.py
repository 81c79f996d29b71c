"""normkit summary / normkit doctor on the command line."""

from __future__ import annotations

import json

import pytest

from normkit.cli import main

M = "tests.tools.cli_models"


def test_summary_plain_and_json(capsys):
    assert main(["summary", f"{M}:cnn", "--input-size", "1,1,28,28", "--plain"]) == 0
    out = capsys.readouterr().out
    assert "Total params: 35,210" in out and "(1, 32, 26, 26)" in out
    assert main(["summary", f"{M}:cnn_with_example", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["total_params"] == 35_210 and data["input_shapes"] == ["(16, 1, 28, 28)"]
    assert main(["summary", f"{M}:INSTANCE"]) == 0  # no input: counts only
    assert "LayerNorm" in capsys.readouterr().out


def test_doctor_exit_status_and_json(capsys, tmp_path):
    assert main(["doctor", f"{M}:cnn_with_example"]) == 0
    out = capsys.readouterr().out
    assert "bias-before-bn" in out and "never-trained" in out
    assert main(["doctor", f"{M}:cnn_with_example", "--strict"]) == 1
    capsys.readouterr()
    assert main(["doctor", f"{M}:broken_nan", "--json"]) == 1
    codes = [f["code"] for f in json.loads(capsys.readouterr().out)]
    assert codes == ["nonfinite-stats"]
    path = tmp_path / "mymodels.py"
    path.write_text(
        "import torch\ndef make():\n    return torch.nn.Sequential(torch.nn.Linear(2, 2))\n"
    )
    assert main(["doctor", f"{path}:make", "--eval"]) == 0
    assert "no-norm-layers" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["summary", "nocolon"], "expected MODULE:FACTORY"),
        (["summary", "no_such_pkg_xyz:f"], "cannot import 'no_such_pkg_xyz'"),
        (["summary", f"{M}:missing"], "has no attribute 'missing'"),
        (["summary", f"{M}:broken"], "broken() failed: RuntimeError: cannot build"),
        (["summary", f"{M}:not_a_model"], "returned int; expected an nn.Module"),
        (["summary", f"{M}:cnn", "--input-size", "1,x"], "--input-size: an input size is"),
        (["summary", f"{M}:cnn", "--input-size", "1,3,28,28"], "failed in layer '0' (Conv2d)"),
        (["doctor", f"{M}:cnn", "--input-size", "2,5"], "fails on the example batch"),
        (["doctor", "missing.py:f"], "no such file: missing.py"),
    ],
)
def test_bad_input_gets_one_clear_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1
