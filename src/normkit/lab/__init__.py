"""normkit.lab: the classic normalization experiments, run on your machine, as plots and a report.

    from normkit import lab
    lab.names()                                   # ['ics', 'batch-size', 'lr', ...]
    cfg = lab.get("ics").config(steps=500)        # defaults + overrides
    result = lab.run_experiment("ics", cfg, "out/ics")
    print(result.headline)                        # out/ics/report.html, results.json, ics.png

Command line: ``normkit lab ics``, ``normkit lab all``, ``normkit lab list``. Needs the
``lab`` extra (matplotlib, rich, scikit-learn, mnist1d); no data is ever downloaded.
"""

from normkit.lab.datasets import Dataset, load_dataset
from normkit.lab.errors import LabError
from normkit.lab.registry import Config, Experiment, Result, get, names
from normkit.lab.runner import run_all, run_experiment

__all__ = [
    "Config",
    "Dataset",
    "Experiment",
    "LabError",
    "Result",
    "get",
    "load_dataset",
    "names",
    "run_all",
    "run_experiment",
]
