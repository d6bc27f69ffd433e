"""The small Lorenz-96 campaign shared by the campaign integration tests (2 experiments x 3 cycles x 4 members), and
the reduced structure flagship."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[2]

NORMAL_F = "{value: 8.0, prior: {dist: normal, mean: 8.0, std: 0.5}, estimable: true}"


def l96_campaign(name: str, *, seed: int = 1, n: int = 40, forcing: str = NORMAL_F, N: int = 4,
                 da_seed: int | None = 3, inflation: float | None = 1.02, every: int = 2, cycles="3",
                 extra: str = "") -> str:
    """A small ETKF twin experiment on Lorenz-96 (every variable observed, unit errors), with ``extra`` sections
    (YAML text, e.g. ensemble, resources, decision) appended: the campaign the integration tests vary."""
    lines = [
        "schema_version: 1",
        f"campaign: {{name: {name}, seed: {seed}}}",
        "models:",
        "  l96:",
        "    type: lorenz96",
        f"    n: {n}",
        "    dt: 0.05",
        f"    forcing: {forcing}",
        "    initial_condition: random",
        "    perturbation: 1.0",
        "timeline: {start: 0.0, end: 1.0, units: s}",
        "assimilation:",
        "  method: etkf",
        f"  N: {N}",
    ]
    if da_seed is not None:
        lines.append(f"  seed: {da_seed}")
    if inflation is not None:
        lines.append(f"  inflation: {{multiplicative: {inflation}}}")
    lines += [f"  schedule: {{every: {every}, cycles: {cycles}}}",
              "  observations: [{type: all_points, component: 0, error_std: 1.0}]"]
    return "\n".join(lines) + "\n" + textwrap.dedent(extra)


CAMPAIGN = l96_campaign("l96camp", cycles="CYCLES", extra="""\
    ensemble: {ranks_per_member: 2}
    resources: {type: local, ranks: 1, workers: 2}
    outputs: {checkpoint_every: 1}  # online as the workflow: every cycle's checkpoint is compared
    """)


MATRIX = {"assimilation.inflation.multiplicative": [1.0, 1.05]}
EXPERIMENTS = ("multiplicative-1", "multiplicative-1.05")


def write_campaign(path, cycles: int = 3):
    path.write_text(CAMPAIGN.replace("CYCLES", str(cycles)))
    return path


def arrays(exp_dir) -> dict[str, np.ndarray]:
    """Every number an experiment leaves behind: NetCDF data and checkpoint ensembles (not provenance times)."""
    import xarray as xr

    from twin.campaign import layout
    from twin.io.checkpoint import CheckpointReader

    out = {}
    for name in layout.OUTPUTS:
        with xr.open_dataset(exp_dir / name, decode_times=False) as ds:
            for var in list(ds.data_vars) + list(ds.coords):
                out[f"{name}:{var}"] = ds[var].values
    for k in layout.checkpoint_cycles(exp_dir):
        with CheckpointReader(layout.checkpoint_file(exp_dir, k)) as r:
            out[f"cycle{k}:state"] = r.read_field("l96")
            out[f"cycle{k}:F"] = np.asarray(r.scalar_parameters["F"])
    return out


def assert_same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        x, y = np.asarray(a[key]), np.asarray(b[key])
        assert x.shape == y.shape and x.dtype == y.dtype, key
        assert x.tobytes() == y.tobytes(), f"{key} differs (max |diff| {np.nanmax(np.abs(x - y))})"


def structure_campaign(directory: Path, *, members: int, cycles: int, placements: int,
                       **assimilation) -> tuple[Path, dict]:
    """configs/structure.yaml reduced to ``members`` and ``cycles`` coupling windows of 2 s on one rank, outputs in
    ``directory/run``, ``placements`` random gauge layouts; ``assimilation``: keys replacing those of its
    assimilation section. Returns the written file and its data."""
    cfg = yaml.safe_load((ROOT / "configs" / "structure.yaml").read_text())
    cfg["assimilation"].update(N=members, **assimilation)
    cfg["assimilation"]["schedule"]["cycles"] = cycles
    cfg["timeline"]["end"] = 2.0 * cycles
    cfg["decision"]["structure"]["random_placements"] = placements
    cfg["resources"] = {"type": "local", "ranks": 1}
    cfg["outputs"]["directory"] = str(directory / "run")
    path = directory / "structure.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, cfg
