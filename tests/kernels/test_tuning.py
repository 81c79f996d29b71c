"""``normkit tune``: this machine's measured crossover table, and the dispatcher reading it
over the shipped one."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from normkit import backends, cli
from normkit.backends import numba_backend, select, torch_backend, tuning
from tests.kernels.conftest import numba_ops  # noqa: F401  (skips without numba)


@pytest.fixture
def machine_table(monkeypatch, tmp_path):
    """NORMKIT_CROSSOVER pointing at a file of the test's own; tables read afresh."""
    path = tmp_path / "crossover-this-machine.json"
    monkeypatch.setenv(tuning.ENV_VAR, str(path))
    backends.reload_crossover()
    yield path
    monkeypatch.undo()  # back to the suite's NORMKIT_CROSSOVER=shipped (tests/conftest.py)
    backends.reload_crossover()


@pytest.mark.parametrize(
    ("ratios", "expected"),
    [
        ([0.5, 0.9, 1.2, 1.5], {"min": 3, "max": None}),
        ([0.5, 1.2, 0.9, 1.1], {"min": 4, "max": None}),  # a tie: the run of larger sizes
        ([1.1, 1.2, 0.8, 1.3], {"min": 1, "max": 2}),
        ([0.5, 0.9, 1.0, 0.7], {"min": 0, "max": 0}),  # never faster: torch at every size
    ],
)
def test_the_winning_range_is_the_longest_run_of_wins(ratios, expected):
    assert tuning.winning_range([1, 2, 3, 4], ratios) == expected


def test_measure_returns_one_cell_per_op_dtype_and_layout():
    seen = []
    table = tuning.measure(
        ["batch_norm_train", "layer_norm"], ["2d"], dtypes=(torch.float32,), repeats=1,
        sizes=(1024, 4096), report=lambda *cell: seen.append(cell),
    )  # fmt: skip
    assert set(table) == {"batch_norm_train", "layer_norm"}
    for op in table:
        assert set(table[op]) == {"float32"} and set(table[op]["float32"]) == {"2d"}
        cell = table[op]["float32"]["2d"]
        assert cell == {"min": 0, "max": 0} or cell["min"] in (1024, 4096)
    assert [(op, layout) for op, _, layout, _, _ in seen] == [
        ("batch_norm_train", "2d"), ("layer_norm", "2d"),
    ]  # fmt: skip
    assert all(len(ratios) == 2 and min(ratios) > 0 for *_, ratios, _ in seen)


def test_a_machine_table_overrides_the_shipped_cells_it_holds(machine_table):
    shipped = backends.crossover("batch_norm_train", torch.float32, "contiguous")
    x = torch.randn(16, 80, 16, 16)  # 327,680 values: numba's in the shipped table
    assert select("batch_norm_train", x) is numba_backend.OPS["batch_norm_train"]
    tuning.write_tuned({"batch_norm_train": {"float32": {"contiguous": {"min": 0, "max": 0}}}},
                       machine_table)  # fmt: skip
    backends.reload_crossover()
    assert backends.crossover("batch_norm_train", torch.float32, "contiguous") == (1, 0)
    assert select("batch_norm_train", x) is torch_backend.batch_norm_train
    # cells the machine did not measure stay the shipped ones
    other = backends.crossover("batch_norm_train", torch.float64, "contiguous")
    backends._CROSSOVER.clear()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(tuning.ENV_VAR, "shipped")
        assert backends.crossover("batch_norm_train", torch.float32, "contiguous") == shipped
        assert backends.crossover("batch_norm_train", torch.float64, "contiguous") == other
        backends.reload_crossover()
    # a second write adds cells and keeps the first
    tuning.write_tuned({"layer_norm": {"float32": {"2d": {"min": 4096, "max": None}}}},
                       machine_table)  # fmt: skip
    saved = json.loads(machine_table.read_text())
    assert saved["batch_norm_train"]["float32"]["contiguous"] == {"min": 0, "max": 0}
    assert saved["layer_norm"]["float32"]["2d"] == {"min": 4096, "max": None}


def test_an_unreadable_machine_table_is_logged_and_ignored(machine_table, caplog):
    machine_table.write_text("{not json")
    shipped = json.loads((tuning.Path(backends.__file__).with_name("crossover.json")).read_text())[
        "batch_norm_train"
    ]["float32"]["contiguous"]
    with caplog.at_level(logging.WARNING, logger="normkit.backends"):
        found = backends.crossover("batch_norm_train", torch.float32, "contiguous")
    assert found == (max(1, shipped["min"]), shipped["max"])
    assert "ignoring the measured crossover table" in caplog.text


def test_the_machine_key_names_cpu_threads_and_torch(monkeypatch):
    key = tuning.machine_key()
    assert f"-{torch.get_num_threads()}t-torch" in key
    assert "/" not in key and " " not in key
    monkeypatch.delenv(tuning.ENV_VAR)
    monkeypatch.setenv("XDG_CACHE_HOME", "/somewhere")
    assert str(tuning.tuned_table_path()) == f"/somewhere/normkit/crossover-{key}.json"
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1 if before != 1 else 2)
        assert tuning.machine_key() != key  # another thread count: another table
    finally:
        torch.set_num_threads(before)
    monkeypatch.setenv(tuning.ENV_VAR, "shipped")
    assert tuning.tuned_table_path() is None


def test_the_tune_command_writes_the_table_and_the_dispatcher_uses_it(
    machine_table, monkeypatch, capsys
):
    monkeypatch.setattr(tuning, "SIZES", (1024, 4096))
    monkeypatch.setitem(backends._CROSSOVER, "rms_norm", {})  # a table already in memory
    assert cli.main(["tune", "--ops", "rms_norm", "--layouts", "2d", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "rms_norm" in out and f"wrote {machine_table}" in out
    saved = json.loads(machine_table.read_text())
    assert set(saved) == {"rms_norm"} and set(saved["rms_norm"]) == {"float32", "float64"}
    cell = saved["rms_norm"]["float32"]["2d"]
    expected = (1, 0) if cell["max"] == 0 else (cell["min"], cell["max"])
    assert backends.crossover("rms_norm", torch.float32, "2d") == expected
    assert cli.main(["tune", "--ops", "no_such_op"]) == 2
