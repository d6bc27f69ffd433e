"""A small tumour campaign on a calendar (12 x 12 cells of 2 mm, a lesion at the centre, visits every 2 days from
2026-03-01), as the tests of imaging visits from files run it (tests/integration/test_tumour_visits.py,
test_live_visits.py)."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
START = "2026-03-01"


def tumour_campaign(observations, method: str = "etkf", cycles: int = 3) -> dict:
    """The oncology flagship reduced to that campaign, observed by ``observations``: a filter or ES-MDA with an
    analysis every 2 days for ``cycles`` cycles, or one 4D-Var window over the three visits of days 2, 4, 6."""
    data = yaml.safe_load((ROOT / "configs" / "oncology.yaml").read_text())
    for key in ("experiments", "decision"):
        data.pop(key)
    tumour = data["models"]["tumour"]
    tumour["grid"] = {"shape": [12, 12], "extent": [[0, 24], [0, 24]], "units": "mm"}
    tumour["seed"] = {"center": [12, 12], "radius": 4.0, "amplitude": 0.5}
    data["timeline"] = {"start": START, "end": 2.0 * cycles, "units": "day"}
    data["resources"] = {"type": "local", "ranks": 1, "workers": 1}
    data["outputs"] = {"directory": "runs/{name}"}
    if method == "4dvar":
        data["assimilation"] = {"method": "4dvar", "model": "tumour", "obs_interval": 2.0, "window": 3, "cycles": 1,
                                "seed": 2, "initial_state": False, "parameters": [{"name": "k"}, {"name": "D_white"}],
                                "observations": observations,
                                "tao": {"gatol": 2.0, "grtol": 0.0, "max_iterations": 5, "on_failure": "warn"},
                                "laplace": {"rank": 4, "oversampling": 4, "samples": 6, "level": 0.9}}
    else:
        data["assimilation"] = {"method": method, "N": 8, "seed": 2, "schedule": {"every": 2, "cycles": cycles},
                                "observations": observations, "background_std": 1.0e-12,
                                **({"esmda_alphas": [2.0, 2.0]} if method == "esmda" else {})}
    return data
