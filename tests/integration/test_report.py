"""``twin report`` (through the CLI functions) on finished runs: a Lorenz-96 assimilation campaign with a decision
and guardrail flags, and the forecast-only quickstart; the HTML exists and embeds its figures, every PNG exists and
is non-empty, and panels without data are skipped with a note."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI

from campaign_case import l96_campaign
from twin.cli_report import add_report_parser, cmd_report

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[2]

CAMPAIGN = l96_campaign("l96report", N=6, extra="""\
    ensemble: {ranks_per_member: 1}
    resources: {type: local, ranks: 1}
    """)


def _report(run_dir) -> int:
    parser = argparse.ArgumentParser(prog="twin")
    add_report_parser(parser.add_subparsers(dest="command"))
    return cmd_report(parser.parse_args(["report", str(run_dir)]))


def _check_pngs(report_dir: Path, expected: set[str]) -> None:
    pngs = {p.name: p for p in report_dir.rglob("*.png")}
    assert expected <= set(pngs), sorted(pngs)
    for p in pngs.values():
        data = p.read_bytes()
        assert len(data) > 2000 and data[:8] == b"\x89PNG\r\n\x1a\n", p


def test_report_of_an_assimilation_campaign(tmp_path, capsys):
    from twin.campaign.online import run_online
    from twin.config.loader import load_campaign
    from twin.decision.guardrails import Guardrails, GuardrailSettings
    from twin.decision.records import write_decision
    from twin.kinds.structure.decision import MaintenanceDecision

    (tmp_path / "c.yaml").write_text(CAMPAIGN)
    run_dir = tmp_path / "run"
    (exp,) = run_online(load_campaign(tmp_path / "c.yaml"), MPI.COMM_SELF, run_dir)
    # a decision and guardrail flags next to the experiment's outputs
    write_decision(exp, MaintenanceDecision(2.5e8, 0.1, 0.15, 0.05, np.linspace(1.5e8, 3e8, 20), 1.0).as_dict())
    g = Guardrails(4, GuardrailSettings(policy="exclude"))
    rng = np.random.default_rng(0)
    for k in range(15):
        g.check(k, 0.1 * k, rng.standard_normal((4, 8)), np.array([0.0, 0.0, 0.0, 8.0]), np.ones(4))
    g.write_flags(exp / "flags.jsonl")

    # the last analysis ensemble as posterior samples for decisions
    from twin.decision.prediction import PosteriorEnsemble

    post = PosteriorEnsemble.from_checkpoint(exp / "checkpoint" / "cycle_0003.h5", "l96")
    assert post.states.shape == (6, 40) and post.parameters["F"].shape == (6,)
    assert post.time == pytest.approx(0.3)

    assert _report(run_dir) == 0
    out = capsys.readouterr().out
    index = run_dir / "report" / "index.html"
    assert str(index) in out and index.is_file()
    _check_pngs(run_dir / "report", {"fields.png", "rmse_spread.png", "rank_histogram.png", "qoi_fans.png",
                                     "decision.png", "changes.png"})
    text = index.read_text()
    assert text.count("data:image/png;base64,") == 6
    assert "sensor 3" in text and "excluded" in text  # the flags table
    assert "P(max von Mises" in text  # the decision's summary
    assert "parameter F" in text  # what changed since the last update
    assert "qoi.nc not found" not in text  # a forecast's output, not missing from an assimilation (a probe)


def test_report_of_the_quickstart_forecast(tmp_path):
    from twin.config.loader import load_campaign
    from twin.driver import run_campaign

    result = run_campaign(load_campaign(ROOT / "configs" / "quickstart.yaml"), MPI.COMM_SELF,
                          run_dir=str(tmp_path / "qs"))
    assert _report(result.run_dir) == 0
    index = result.run_dir / "report" / "index.html"
    _check_pngs(result.run_dir / "report", {"fields.png", "qoi_fans.png"})
    text = index.read_text()
    assert "Skipped: no diagnostics.nc" in text and "Skipped: needs posterior.nc" in text
    assert "Skipped: no decision recorded" in text
    assert "posterior.nc not found" not in text and "diagnostics.nc not found" not in text  # not a forecast's
    _a_report_that_cannot_be_written_leaves_the_last_one_whole(result.run_dir)
    # found by trying: report/ replaced by a link elsewhere, and the report was written there
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.rmtree(result.run_dir / "report")
    (result.run_dir / "report").symlink_to(outside)
    assert _report(result.run_dir) == 2
    assert not list(outside.iterdir())


def _a_report_that_cannot_be_written_leaves_the_last_one_whole(run_dir: Path) -> None:
    """``twin report`` whose files cannot be written whole (a file size limit, as a full disk ends them halfway):
    one error line, exit 2, and the report directory holds the last report's files, whole (found by a probe: a
    figure written straight to its name was left truncated, and a full disk left index.html's temporary file)."""
    import subprocess
    import sys

    # MPI starts before the limit (its shared-memory files would not fit), then twin's command as the CLI runs it
    code = ("import resource, sys; from mpi4py import MPI; "
            "resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000)); "
            "from twin.cli import main; sys.exit(main(['report', sys.argv[1]]))")
    report = run_dir / "report"
    before = {p.name: p.read_bytes() for p in report.iterdir()}
    assert max(len(b) for b in before.values()) > 20_000
    out = subprocess.run([sys.executable, "-c", code, str(run_dir)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: cannot write ") and errors[0].endswith(
        "the file is larger than this process may write (its file size limit, ulimit -f); raise the limit and run the "
        "same command again to resume"), errors
    after = {p.name: p.read_bytes() for p in report.iterdir()}
    assert set(after) == set(before), sorted(set(after) ^ set(before))  # no temporary file left
    for name, data in after.items():
        if name.endswith(".png"):
            assert data.endswith(b"IEND\xaeB`\x82"), f"{name} is not a whole PNG ({len(data)} bytes)"
    assert after["index.html"] == before["index.html"]


def test_report_refuses_a_directory_without_outputs(tmp_path, capsys):
    from twin.campaign.heartbeat import write_heartbeat

    assert _report(tmp_path / "missing") == 2
    (tmp_path / "empty").mkdir()
    assert _report(tmp_path / "empty") == 2
    assert "holds no twin outputs" in capsys.readouterr().err
    # a campaign still running (its driver's heartbeat: this process), nothing written yet: said so, exit 3 as
    # twin status (found by a probe: 'run the campaign first' while it ran)
    write_heartbeat(tmp_path / "empty")
    assert _report(tmp_path / "empty") == 3
    assert capsys.readouterr().err.splitlines() == [
        f"error: report: the campaign in {tmp_path / 'empty'} is still running and no experiment has written its "
        f"outputs yet; run twin report again when one has (twin status {tmp_path / 'empty'} follows it)"]
    assert not (tmp_path / "empty" / "report").exists()


def test_report_of_a_run_with_damaged_files_says_so_and_exits_1(tmp_path):
    """posterior.nc truncated and decision.json not JSON (a finished run's files damaged afterwards): the report is
    still written, names both files at its top and in the verdict, and ``twin report`` exits 1 with one error line
    per file (it exited 0 and dropped the decision from the verdict without a word)."""
    import json
    import os
    import subprocess
    import sys

    from twin.campaign.online import run_online
    from twin.config.loader import load_campaign

    (tmp_path / "c.yaml").write_text(l96_campaign("dmg", N=6, extra="""\
        decision: {qois: [energy], horizon: 0.4}
        resources: {type: local, ranks: 1}
        """))
    run_dir = tmp_path / "run"
    (exp,) = run_online(load_campaign(tmp_path / "c.yaml"), MPI.COMM_SELF, run_dir)
    ok = subprocess.run([sys.executable, "-m", "twin.cli", "report", str(run_dir)], capture_output=True, text=True,
                        timeout=300)
    assert ok.returncode == 0 and "error:" not in ok.stderr, ok.stderr
    assert "DAMAGED" not in (run_dir / "report" / "index.html").read_text()

    os.truncate(exp / "posterior.nc", (exp / "posterior.nc").stat().st_size // 2)
    (exp / "decision.json").write_text('{"x": NaN')
    out = subprocess.run([sys.executable, "-m", "twin.cli", "report", str(run_dir)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 1, out.stdout + out.stderr
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    tail = (f"; the report leaves it out: run the campaign again to write it again (twin status {run_dir} says what "
            "it finds damaged)")
    assert errors[0] == (f"error: {exp / 'decision.json'} cannot be read (not JSON: Expecting ',' delimiter: line 1 "
                         "column 10 (char 9))" + tail), errors
    assert errors[1].startswith(f"error: {exp / 'posterior.nc'} cannot be read (") and errors[1].endswith(tail)
    assert len(errors) == 2 and "Traceback" not in out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("dmg: DAMAGED (decision.json, posterior.nc): ") and \
        lines[-1] == f"report: {run_dir / 'report' / 'index.html'}"
    text = (run_dir / "report" / "index.html").read_text()
    assert '<div class="verdict failed damaged"><h2>DAMAGED: 2 file(s) of this run cannot be read</h2>' in text
    assert "<li><code>experiments/dmg/decision.json</code>: not JSON" in text
    assert "<li><code>experiments/dmg/posterior.nc</code>: " in text
    assert "<th>DAMAGED</th><td>decision.json (not JSON" in text
    (verdict,) = json.loads((run_dir / "report" / "verdicts.json").read_text())
    assert set(verdict["damaged"]) == {"experiments/dmg/decision.json", "experiments/dmg/posterior.nc"}
    # an output the finished run wrote and that is gone (twin status: damaged) is damage too (was exit 0, no word)
    (exp / "forecast.nc").unlink()
    out = subprocess.run([sys.executable, "-m", "twin.cli", "report", str(run_dir)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"error: {exp / 'forecast.nc'} cannot be read (missing){tail}" in out.stderr.splitlines(), out.stderr


def test_report_of_a_campaign_that_has_not_finished_says_so_and_exits_1(tmp_path):
    """Found by a probe: the report of a campaign stopped by Ctrl-C (one experiment stopped while it wrote its
    outputs, the other never started) exited 0 without a word of it, titled the experiment that never ran a
    "(forecast)", said "The methods agree on the decision" with no decision written, and printed "nan" for the free
    run it had not written. Now: a NOT FINISHED warning naming both at the top, in their verdicts and headings, no
    comparison of methods, one error line each and exit status 1; the resumed campaign's report exits 0."""
    import json
    import shutil
    import subprocess
    import sys

    from twin.campaign import layout
    from twin.campaign.online import run_online
    from twin.config.loader import load_campaign

    (tmp_path / "c.yaml").write_text(l96_campaign("unf", N=6, extra="""\
        decision: {qois: [energy], horizon: 0.4, exceedance_limits: {energy: 20.0}}
        resources: {type: local, ranks: 1}
        experiments: {matrix: {assimilation.inflation.multiplicative: [1.0, 1.05]}}
        """))
    run_dir = tmp_path / "run"
    first, second = sorted(run_online(load_campaign(tmp_path / "c.yaml"), MPI.COMM_SELF, run_dir))
    layout.done_marker(first).unlink()  # stopped between its NetCDF outputs and its decision
    (first / "decision.json").unlink()
    for path in second.iterdir():  # never started: its folder holds its configuration only
        if path.name != layout.config_file(second).name:
            shutil.rmtree(path) if path.is_dir() else path.unlink()

    out = subprocess.run([sys.executable, "-m", "twin.cli", "report", str(run_dir)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 1, out.stdout + out.stderr
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert errors == [f"error: experiment {first.name} has not finished (interrupted at 3/3 cycles): the report "
                      "shows what it wrote so far; run the campaign again to finish it (twin status "
                      f"{run_dir} follows it)",
                      f"error: experiment {second.name} has not finished (not run yet): the report shows what it "
                      f"wrote so far; run the campaign again to finish it (twin status {run_dir} follows it)"], errors
    text = (run_dir / "report" / "index.html").read_text()
    assert "<h2>NOT FINISHED: 2 experiment(s) of this campaign</h2>" in text
    assert f"<h2>{second.name} (NOT FINISHED)</h2>" in text and f"<h2>{first.name} (assimilation experiment, NOT FINISHED)" in text
    assert "NOT FINISHED (not run yet): nothing to judge yet" in text
    assert "agree on the decision" not in text and "2 of 2 experiment(s) NOT FINISHED" in text
    assert ">nan<" not in text and " nan" not in text
    verdicts = {v["experiment"]: v["unfinished"] for v in json.loads((run_dir / "report" / "verdicts.json")
                                                                     .read_text())}
    assert verdicts == {first.name: "interrupted at 3/3 cycles", second.name: "not run yet"}

    run_online(load_campaign(tmp_path / "c.yaml"), MPI.COMM_SELF, run_dir)  # resumed: both finish
    out = subprocess.run([sys.executable, "-m", "twin.cli", "report", str(run_dir)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and "error:" not in out.stderr, out.stderr
    text = (run_dir / "report" / "index.html").read_text()
    assert "NOT FINISHED" not in text and "agree on the decision" in text


def test_ctrl_c_during_a_report_says_to_write_it_again(tmp_path, capsys, monkeypatch):
    """The interrupted line of ``twin report`` says what the same command does again (it said 'resume')."""
    import twin.report
    from twin.cli import main

    def interrupted(run_dir):
        raise KeyboardInterrupt

    monkeypatch.setattr(twin.report, "write_report", interrupted)
    assert main(["report", str(tmp_path)]) == 130
    assert capsys.readouterr().err.splitlines()[-1] == ("interrupted (Ctrl-C): every file written so far is complete; "
                                                         "run the same command again to write the report")


def test_outputs_and_report_name_the_campaign_file_they_came_from(tmp_path):
    """Found by a probe: the outputs held the SHA-256 of each experiment's expanded configuration only, so a user
    could not match them to the campaign file they hold, and the report named no version at all. Every output now
    records the campaign file's SHA-256 (``twin_campaign_sha256``: ``sha256sum`` of the file), and the report's top
    says it with the twin version and git revision that wrote the outputs."""
    import hashlib

    import xarray as xr

    from twin.campaign.online import run_online
    from twin.config.loader import load_campaign

    text = l96_campaign("prov", N=4, extra="""\
        resources: {type: local, ranks: 1}
        experiments: {matrix: {assimilation.inflation.multiplicative: [1.0, 1.05]}}
        """)
    (tmp_path / "c.yaml").write_text(text)
    digest = hashlib.sha256((tmp_path / "c.yaml").read_bytes()).hexdigest()
    run_dir = tmp_path / "run"
    exps = run_online(load_campaign(tmp_path / "c.yaml"), MPI.COMM_SELF, run_dir)
    configs = set()
    for exp in exps:
        with xr.open_dataset(exp / "posterior.nc", decode_times=False) as ds:
            assert ds.attrs["twin_campaign_sha256"] == digest
            configs.add(ds.attrs["twin_config_sha256"])
    assert len(configs) == 2 and digest not in configs  # each experiment's own configuration, hashed too
    assert _report(run_dir) == 0
    page = (run_dir / "report" / "index.html").read_text()
    assert f"from the campaign file of SHA-256 <code>{digest}</code>" in page and "Outputs written by twin " in page
