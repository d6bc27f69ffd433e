"""Core pieces: grid geometry and views, units, errors, logging, progress, communicator split (serial)."""

import logging
import os

import numpy as np
import pytest
from mpi4py import MPI

from twin.core.comm import split_ensemble
from twin.core.errors import ConfigError, ConfigProblem, ModelError, SolverError, TwinError
from twin.core.grid import Grid
from twin.core.log import get_logger, setup_logging
from twin.core.progress import progress
from twin.core.units import compatible, convert, parse_units


def test_cell_grid_geometry_and_integral():
    g = Grid(MPI.COMM_SELF, (10, 4), [(0.0, 2.0), (-1.0, 1.0)])
    assert g.spacing == (0.2, 0.5)
    assert np.allclose(g.axis_coordinates(0), 0.1 + 0.2 * np.arange(10))
    X, Y = g.owned_mesh()
    assert X.shape == (4, 10) and Y.shape == (4, 10)
    v = g.from_function(lambda X, Y: 3 * X**0 + 0 * Y)
    assert g.integrate(v) == pytest.approx(3 * 2.0 * 2.0, rel=1e-14)
    # Midpoint rule integrates a linear function exactly.
    g.from_function(lambda X, Y: X + 2 * Y, v)
    assert g.integrate(v) == pytest.approx(4.0, rel=1e-13)
    v.destroy()
    g.destroy()


def test_node_grid_includes_both_ends_and_periodic_spacing():
    g = Grid(MPI.COMM_SELF, (5,), [(0.0, 1.0)], centering="node")
    assert np.allclose(g.axis_coordinates(0), [0, 0.25, 0.5, 0.75, 1.0])
    g.destroy()
    p = Grid(MPI.COMM_SELF, (4,), [(0.0, 1.0)], centering="node", periodic=True)
    assert np.allclose(p.axis_coordinates(0), [0, 0.25, 0.5, 0.75])
    p.destroy()


def test_views_are_c_order_with_dof_last():
    g = Grid(MPI.COMM_SELF, (3, 2), [(0, 3), (0, 2)], dof=2)
    v = g.create_global()
    a = g.owned_array(v)
    assert a.shape == (2, 3, 2)
    a[1, 2, 1] = 7.0  # y index 1, x index 2, component 1
    assert v.getArray()[((1 * 3) + 2) * 2 + 1] == 7.0
    full = g.gather(v)
    assert full[1, 2, 1] == 7.0
    lv = g.create_local()
    g.global_to_local(v, lv)
    gh = g.ghosted_array(lv)
    off = g.ghost_offsets()
    assert gh[off[0] + 1, off[1] + 2, 1] == 7.0
    for o in (v, lv):
        o.destroy()
    g.destroy()


@pytest.mark.parametrize("kwargs, text", [
    (dict(shape=(0, 3), extent=[(0, 1), (0, 1)]), "at least 1"),
    (dict(shape=(3, 3), extent=[(0, 1)]), "extent has 1"),
    (dict(shape=(3,), extent=[(1, 0)]), "hi > lo"),
    (dict(shape=(3,), extent=[(0, 1)], centering="edge"), "centering"),
])
def test_bad_grids_are_refused(kwargs, text):
    with pytest.raises(ModelError, match=text):
        Grid(MPI.COMM_SELF, name="g", **kwargs)


def test_units_convert_and_refuse_mismatch():
    assert convert(1.0, "mm^2/day", "m^2/s") == pytest.approx(1e-6 / 86400)
    assert compatible("Gy", "J/kg")
    assert not compatible("m", "s")
    with pytest.raises(ValueError, match="not convertible"):
        convert(1.0, "m", "s")
    with pytest.raises(ValueError, match="unknown units"):
        parse_units("furlongz")


def test_unit_registry_from_the_disk_cache_equals_the_parsed_one(tmp_path):
    """The cached registry (written on the first build, loaded on the second) converts exactly as one parsed from
    pint's definitions; a corrupted cached copy falls back to parsing instead of failing."""
    from twin.core.units import build_registry

    cache = tmp_path / "pint"
    first, loaded, parsed = build_registry(cache), build_registry(cache), build_registry(None)
    assert list(cache.glob("*.pickle"))
    cases = [("mm**2/day", "m**2/s"), ("Gy", "J/kg"), ("degC", "K"), ("knot", "m/s"), ("hour", "s"), ("1", "percent")]
    for src, dst in cases:
        expected = parsed.Quantity(3.7, src).to(dst).magnitude
        assert loaded.Quantity(3.7, src).to(dst).magnitude == expected
        assert first.Quantity(3.7, src).to(dst).magnitude == expected
    for f in cache.glob("*.pickle"):
        f.write_bytes(f.read_bytes()[:100])
    broken = build_registry(cache)
    assert broken.Quantity(1.0, "mm**2/day").to("m**2/s").magnitude == pytest.approx(1e-6 / 86400, rel=1e-15)


def test_errors_share_one_root_and_format():
    p = ConfigProblem("c.yaml", 3, 5, "models.a.grid", "bad")
    assert str(p) == "c.yaml:3:5: models.a.grid: bad"
    e = ConfigError([p, ConfigProblem("c.yaml", None, None, "", "x")])
    assert e.lines() == ["c.yaml:3:5: models.a.grid: bad", "c.yaml: x"]
    s = SolverError("tumour", 12.5, "DIVERGED_NONLINEAR_SOLVE")
    assert "tumour" in str(s) and "t=12.5" in str(s) and "DIVERGED_NONLINEAR_SOLVE" in str(s)
    for cls in (ConfigError, ModelError, SolverError):
        assert issubclass(cls, TwinError)


def test_logging_levels_by_rank(capsys):
    setup_logging(rank=1, size=2)
    log = get_logger("models.test")
    log.info("hidden on rank 1")
    log.warning("collective: rank 0 says it")
    log.warning("member 3 failed: only this rank knows", extra={"rank_local": True})
    log.error("broken")
    err = capsys.readouterr().err
    assert "hidden" not in err and "collective" not in err
    assert "[1/2] WARNING twin.models.test: member 3 failed" in err and "broken" in err
    setup_logging(rank=0, size=1)
    assert logging.getLogger("twin").level == logging.INFO


def test_a_log_file_that_cannot_be_written_is_given_up_with_one_line(capsys, tmp_path):
    """Found by a probe filling a run's disk: every record after twin.log could no longer be written printed a
    ``--- Logging error ---`` traceback (30 lines each) on the terminal. Now one WARNING says the file cannot be
    written and why, and the terminal keeps the lines. (/dev/full: every write fails with ENOSPC.)"""
    import os

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    setup_logging(rank=0, size=1, logfile="/dev/full")
    log = get_logger("campaign.test")
    for k in range(3):
        log.info("cycle %d done", k)
    err = capsys.readouterr().err
    assert "Logging error" not in err and "Traceback" not in err, err
    assert err.count("/dev/full cannot be written (No space left on device): the log goes on on the terminal only") \
        == 1, err
    assert all(f"cycle {k} done" in err for k in range(3)), err
    setup_logging(rank=0, size=1)


def test_repeated_warnings_are_counted_not_repeated(capsys):
    from twin.core.log import REPEATS_SHOWN, log_repeated_warnings

    setup_logging(rank=0, size=1)
    log = get_logger("assimilation.test")
    for k in range(5):
        log.warning("window %d: TAO did not converge", k)
    log_repeated_warnings()
    lines = [line for line in capsys.readouterr().err.splitlines() if "TAO" in line]
    assert len(lines) == REPEATS_SHOWN + 1
    assert lines[-1].endswith(f"{5 - REPEATS_SHOWN} more warning(s) like this were not printed, the last: window 4: "
                              "TAO did not converge")


def test_python_warnings_are_one_log_line(capsys):
    """NumPy's overflow in a run that diverges: one line through the log (terminal and twin.log), not the warning
    and its source line on stderr."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        setup_logging(rank=0, size=1)
        with np.errstate(over="warn"):
            np.float64(1e308) * np.float64(10.0)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].split(" ", 1)[1] == (f"WARNING twin.warnings: RuntimeWarning: overflow encountered in scalar "
                                       f"multiply ({os.path.relpath(__file__)}:{_LINE_OF_OVERFLOW})")


_LINE_OF_OVERFLOW = test_python_warnings_are_one_log_line.__code__.co_firstlineno + 9


def test_progress_logs_when_not_interactive(caplog):
    setup_logging(rank=0, size=1)
    logging.getLogger("twin").propagate = True
    with caplog.at_level(logging.INFO, logger="twin"):
        with progress("cycles", 3, interactive=False, log_every=0.0) as p:
            for _ in range(3):
                p.advance(status="ok")
    logging.getLogger("twin").propagate = False
    assert "cycles: 3/3" in caplog.text


def test_split_serial_gives_one_group_with_all_members():
    lay = split_ensemble(MPI.COMM_SELF, n_members=4)
    assert lay.n_groups == 1 and lay.members == [0, 1, 2, 3]
    with pytest.raises(TwinError, match="multiple of 2"):
        split_ensemble(MPI.COMM_SELF, n_members=4, ranks_per_member=2)
    lay.free()


def test_quiet_terminal_keeps_the_log_file_whole(tmp_path, capsys):
    log_file = tmp_path / "twin.log"
    setup_logging(rank=0, size=1, logfile=str(log_file), quiet=True)
    log = get_logger("campaign.test")
    log.info("cycle 3 done")
    log.warning("member 2 dropped")
    err = capsys.readouterr().err
    assert "cycle 3 done" not in err and "member 2 dropped" in err
    text = log_file.read_text()
    assert "cycle 3 done" in text and "member 2 dropped" in text
    setup_logging(rank=0, size=1)
