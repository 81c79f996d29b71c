"""summary(): Keras's parameter counting, output shapes, totals, norm health, errors."""

from __future__ import annotations

import copy
import io
import json

import pytest
import torch
from torch import nn

import normkit as nk
from normkit.tools import SummaryError, summary
from tests.tools.models import MODEL_CASES, ResNetish, TransformerBlock, keras_cnn


@pytest.mark.parametrize("ns", [nn, nk.nn], ids=["torch", "normkit"])
def test_keras_numbers_for_the_classic_small_cnn(ns):
    """Keras's mnist_convnet (34,826 params) with BatchNorm after each Conv2D: Keras reports
    BN(32) 128 params, 64 non-trainable; totals 35,210 / 35,018 / 192."""
    s = summary(keras_cnn(ns), (1, 1, 28, 28))
    by_name = {r.name: r for r in s.rows}
    assert (by_name["0"].params, by_name["0"].output_shape) == (320, "(1, 32, 26, 26)")
    bn = by_name["1"]
    assert (bn.params, bn.trainable, bn.non_trainable) == (128, 64, 64)
    assert (by_name["5"].params, by_name["5"].trainable) == (256, 128)
    assert by_name["4"].params == 18_496 and by_name["10"].params == 16_010
    assert by_name["8"].output_shape == "(1, 1600)"
    assert (s.total_params, s.trainable_params, s.non_trainable_params) == (35_210, 35_018, 192)
    assert nk.tools.count_params(keras_cnn(ns)) == (35_018, 192)
    text = str(s)
    assert "Total params: 35,210" in text and "Non-trainable params: 192" in text
    assert "BatchNorm2d" in text and "into 0" in text  # fold column of the norm table


def test_memory_totals():
    s = summary(keras_cnn(nn), (2, 1, 28, 28))
    state = sum(t.numel() * 4 for t in keras_cnn(nn).parameters()) + sum(
        t.numel() * t.element_size() for t in keras_cnn(nn).buffers()
    )
    assert s.state_bytes == state
    assert s.input_bytes == 2 * 28 * 28 * 4
    assert s.activation_bytes >= 2 * 32 * 26 * 26 * 4 * 3  # conv, BN, ReLU outputs at least
    assert s.total_bytes == s.state_bytes + s.input_bytes + s.activation_bytes
    json.dumps(s.to_dict())


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_real_world_shapes_and_read_only(case):
    build, shape = MODEL_CASES[case]
    model = build(nk.nn).train()
    before = copy.deepcopy(model.state_dict())
    s = summary(model, shape)
    assert s.total_params == sum(p.numel() for p in model.parameters()) + sum(
        b.numel() for b in model.buffers() if b.is_floating_point()
    )
    # MultiheadAttention uses out_proj's weights without calling it: no output shape there.
    assert all(r.output_shape != "-" for r in s.rows if r.name != "attn.out_proj")
    for key, value in model.state_dict().items():  # nothing changed: no running-stat update
        assert torch.equal(value, before[key]), key
    assert all(m.training for m in model.modules())


def test_transformer_block_rows():
    s = summary(TransformerBlock(nn), torch.randn(2, 5, 16))
    rows = {r.name: r for r in s.rows}
    assert rows["attn"].output_shape == "(2, 5, 16)"  # (output, None) -> the tensor
    assert rows["attn"].params == 3 * 16 * 16 + 3 * 16  # in_proj only; out_proj is its own row
    assert rows["attn.out_proj"].params == 16 * 16 + 16
    assert rows["attn.out_proj"].output_shape == "-"
    norm = {r.name: r for r in s.norm_rows}
    assert norm["ln1"].channels == "(16,)" and norm["ln1"].foldable == "-"


def test_norm_health_rows():
    model = ResNetish(nn)
    nk.tools.freeze(model, include=lambda n, m: n == "stem.1")
    with torch.no_grad():
        model.layers[0].bn1.running_var.fill_(4.0)
    s = summary(model)  # no input: no forward pass
    assert all(r.output_shape == "-" for r in s.rows)
    norm = {r.name: r for r in s.norm_rows}
    assert norm["stem.1"].mode == "frozen(stats+affine)"
    assert norm["stem.1"].foldable == "into stem.0"
    assert norm["layers.0.bn1"].running_var_min == 4.0 and norm["layers.0.bn1"].momentum == 0.1
    assert norm["layers.0.bn1"].num_batches_tracked == 0
    rows = {r.name: r for r in s.rows}
    assert rows["stem.1"].trainable == 0 and rows["stem.1"].non_trainable == 32  # Keras: frozen BN


def test_several_inputs_and_dtypes():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.ln = nk.nn.LayerNorm(4)

        def forward(self, ids, extra):
            return self.ln(self.emb(ids) + extra)

    s = summary(Two(), [(2, 3), (2, 3, 4)], dtypes=[torch.long, torch.float32])
    assert {r.name: r.output_shape for r in s.rows} == {"emb": "(2, 3, 4)", "ln": "(2, 3, 4)"}
    s = summary(Two(), {"ids": torch.zeros(1, 2, dtype=torch.long), "extra": torch.zeros(1, 2, 4)})
    assert s.input_shapes == ["ids=(1, 2)", "extra=(1, 2, 4)"]


def test_wrong_input_size_names_the_layer():
    with pytest.raises(
        SummaryError, match=r"failed in layer '4' \(Conv2d\) on input \(1, 3, 28, 28\)"
    ):
        summary(
            nn.Sequential(
                nn.Conv2d(3, 32, 3), nn.BatchNorm2d(32), nn.ReLU(), nn.Flatten(), nn.Conv2d(5, 5, 1)
            ),
            (1, 3, 28, 28),
        )
    with pytest.raises(
        SummaryError, match=r"failed in layer '1' \(BatchNorm2d\).*expected 16 channels"
    ):
        summary(nn.Sequential(nn.Conv2d(3, 8, 1), nk.nn.BatchNorm2d(16)), (1, 3, 4, 4))
    with pytest.raises(SummaryError, match="positive integers"):
        summary(nn.Linear(2, 2), (0, 2))
    with pytest.raises(SummaryError, match="expected an input size"):
        summary(nn.Linear(2, 2), "big")
    with pytest.raises(SummaryError, match=r"expected a torch\.nn\.Module"):
        summary("model", (1, 2))


def test_rendering_plain_and_rich():
    s = summary(keras_cnn(nk.nn), (1, 1, 28, 28))
    out = io.StringIO()
    s.show(out)  # not a terminal: plain text
    assert out.getvalue().startswith('Model: "Sequential"')
    pytest.importorskip("rich")
    from rich.console import Console

    console = Console(file=io.StringIO(), width=160)
    console.print(s)
    assert "Normalization layers" in console.file.getvalue()


def test_model_without_norms_and_no_params():
    s = summary(nn.ReLU(), (2, 3))
    assert [r.name for r in s.rows] == ["<root>"] and s.total_params == 0 and not s.norm_rows
