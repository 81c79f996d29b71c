"""Structure snapshots: the committed JSON lists every layer's state_dict entries (name, shape,
dtype) and state-dict version, so an accidental change to a checkpoint layout fails loudly.

Regenerate after an intended change with ``NORMKIT_UPDATE_SNAPSHOTS=1 pytest tests/nn/test_snapshots.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import normkit as nk
from tests.samples import NORM_SAMPLES

SNAPSHOT = Path(__file__).resolve().parents[1] / "snapshots" / "state_dicts.json"


def _structure() -> dict[str, dict]:
    out = {}
    for sample in NORM_SAMPLES:
        layer = sample.build(nk.nn)
        state = layer.state_dict()
        out[sample.id] = {
            "version": state._metadata[""].get("version"),
            "entries": {k: [list(v.shape), str(v.dtype)] for k, v in state.items()},
        }
    return out


def test_state_dict_structure_matches_snapshot():
    current = _structure()
    if os.environ.get("NORMKIT_UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
    expected = json.loads(SNAPSHOT.read_text())
    assert current == expected
