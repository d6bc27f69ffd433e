"""Assembling the HTML report: one section per experiment, one subsection per panel, images inlined as base64."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from twin.core.errors import OutputError
from twin.core.log import get_logger
from twin.io.atomic import write_text
from twin.io.provenance import refuse_link_out, utc_now
from twin.report import figures
from twin.report.calibration import calibration_html, summarise
from twin.report.data import RunData, discover
from twin.report.exceedance import which_to_trust
from twin.report.panel import Panel
from twin.report.verdict import Verdict, campaign_html, verdict_for, verdict_html

log = get_logger("twin.report")

_STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;margin-top:2em}h3{font-size:1.05em;margin-bottom:.3em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px}
.note{color:#666;font-style:italic}img{max-width:100%}
.verdict{border:2px solid #2a6;border-radius:6px;padding:.3em 1em;margin:1em 0;background:#f4fbf6}
.verdict.failed{border-color:#c33;background:#fdf3f3}.verdict table{border:none;font-size:.95em}
.verdict th{text-align:left;vertical-align:top;border:none;width:11em}.verdict td{border:none}
.verdict h2{margin-top:.4em}.verdict h4{margin:.8em 0 .2em}"""


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _panel_html(p: Panel) -> str:
    parts = [f"<h3>{html.escape(p.title)}</h3>"]
    if p.image is not None:
        parts.append(_image(p.image))
    if p.note:
        parts.append(f'<p class="note">{p.note if p.image is not None or p.table else "Skipped: " + p.note}</p>')
    if p.table:
        parts.append(p.table)
    return "\n".join(parts)


def _experiment(run: RunData, images: Path, verdict: Verdict) -> tuple[str, list[Path]]:
    out = images / run.name if run.directory != images.parent else images
    refuse_link_out(out, images)
    out.mkdir(parents=True, exist_ok=True)
    if verdict.failed:
        # the reason first; the panels of what the experiment left behind are not worth reading
        return "\n".join([f"<h2>{html.escape(run.name)} (FAILED)</h2>", verdict_html(verdict)]), []
    if verdict.unfinished and verdict.answer.startswith("NOT FINISHED"):  # nothing written to show yet
        return "\n".join([f"<h2>{html.escape(run.name)} (NOT FINISHED)</h2>", verdict_html(verdict)]), []
    panels = []
    for make in figures.panels():
        try:
            panels.append(make(run, out))
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            # a malformed input must not cost the whole report: say which panel failed and why
            log.warning("report: panel %s of %s failed: %s", make.__name__, run.name, exc)
            panels.append(Panel(make.__name__.replace("_panel", ""), note=f"could not be drawn ({exc})"))
    # what this kind of run does not write is not missing: a forecast's qoi.nc in an assimilation experiment, an
    # assimilation's posterior, diagnostics, truth and parameters in a forecast
    other = {"qoi"} if run.kind != "forecast" else {"posterior", "diagnostics", "truth", "parameters"}
    missing = "".join(f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in sorted(run.missing.items())
                      if k not in other)
    kind = f"{run.kind}, NOT FINISHED" if verdict.unfinished else run.kind
    body = [f"<h2>{html.escape(run.name)} ({kind})</h2>", verdict_html(verdict),
            f"<p>Directory: <code>{html.escape(str(run.directory))}</code></p>"]
    body += [_panel_html(p) for p in panels if not (p.optional and p.image is None and not p.table)]
    if missing:
        body.append(f"<details><summary>Inputs not found</summary><ul>{missing}</ul></details>")
    return "\n".join(body), [p.image for p in panels if p.image is not None]


def _relative(run_dir: Path, path: Path) -> str:
    try:
        return str(Path(path).relative_to(run_dir))
    except ValueError:
        return str(path)


def damaged_files(run_dir: Path, runs: list[RunData]) -> dict[str, str]:
    """``{file relative to run_dir: why}`` for every file of the run that is there but cannot be read."""
    out: dict[str, str] = {}
    for run in runs:
        for path, why in sorted(run.damaged.items()):
            out.setdefault(_relative(run_dir, path), why)
    return out


def _damage_html(run_dir: Path, damaged: dict[str, str]) -> str:
    """The warning at the top of the report naming the damaged files (``""`` without any)."""
    if not damaged:
        return ""
    items = "".join(f"<li><code>{html.escape(name)}</code>: {html.escape(why)}</li>"
                    for name, why in damaged.items())
    return (f'<div class="verdict failed damaged"><h2>DAMAGED: {len(damaged)} file(s) of this run cannot be read'
            f"</h2><ul>{items}</ul><p>This report leaves out what needs them (a decision in a damaged file is not "
            "in the verdicts). Run the campaign again to write them again"
            + (f"; <code>twin status {html.escape(str(run_dir))}</code> says what it finds damaged"
               if (run_dir / "experiments").is_dir() else "") + ".</p></div>\n")


def unfinished_experiments(run_dir: Path) -> dict[str, str]:
    """``{experiment: how far it got}`` for the experiments of the campaign in ``run_dir`` that have not finished
    (``"interrupted at 3/24 cycles"``, ``"not run yet"``, ``"still running, 5/24 cycles"``), by
    :func:`twin.campaign.status.status` without verifying checkpoints; ``{}`` for a directory that is not a campaign's
    (a forecast's). Failed and damaged experiments are said by their own verdicts."""
    if not (run_dir / "experiments").is_dir():
        return _unfinished_forecast(run_dir)
    from twin.campaign.status import status

    out = {}
    for e in status(run_dir, verify=False).experiments:
        cycles = f"{e.cycles_done}/{e.n_cycles} cycles" if e.n_cycles is not None else f"{e.cycles_done} cycles"
        if e.state == "pending":
            out[e.name] = "not run yet"
        elif e.state == "interrupted":
            out[e.name] = f"interrupted at {cycles}"
        elif e.state == "running":
            out[e.name] = f"still running, {cycles}"
    return out


def _unfinished_forecast(run_dir: Path) -> dict[str, str]:
    """``{run: "stopped at 171/750 output intervals"}`` for a forecast run whose ``qoi.nc`` holds fewer records than
    its run writes (:data:`twin.io.netcdf.EXPECTED_RECORDS`; a killed forecast was reported as an ordinary one, exit
    0: found by a probe); ``{}`` otherwise, and for files written before twin recorded the count."""
    import netCDF4

    from twin.io.netcdf import EXPECTED_RECORDS

    path = run_dir / "qoi.nc"
    try:
        with netCDF4.Dataset(path) as nc:
            expected = int(getattr(nc, EXPECTED_RECORDS)) if EXPECTED_RECORDS in nc.ncattrs() else None
            held = len(nc.dimensions["time"]) if "time" in nc.dimensions else 0
    except (OSError, KeyError, ValueError):
        return {}
    if expected is None or held >= expected:
        return {}
    return {run_dir.name: f"stopped at {max(held - 1, 0)}/{expected - 1} output intervals"}


def _unfinished_html(run_dir: Path, unfinished: dict[str, str]) -> str:
    """The warning at the top of the report naming the experiments that have not finished (``""`` without any)."""
    if not unfinished:
        return ""
    items = "".join(f"<li>{html.escape(name)}: {html.escape(how)}</li>" for name, how in unfinished.items())
    if not (run_dir / "experiments").is_dir():  # a forecast run: no checkpoints, it starts over
        return (f'<div class="verdict failed"><h2>NOT FINISHED: the forecast stopped early</h2><ul>{items}</ul>'
                f"<p>Its panels show the quantities of interest it wrote so far (no fields: a forecast writes them "
                f"at its end). Run the campaign again to compute the whole forecast (it starts over).</p></div>\n")
    return (f'<div class="verdict failed"><h2>NOT FINISHED: {len(unfinished)} experiment(s) of this campaign</h2>'
            f"<ul>{items}</ul><p>Their verdicts and panels show what they wrote so far, and they are left out of the "
            f"comparison of methods. Run the campaign again to finish them (it resumes from the last checkpoint); "
            f"<code>twin status {html.escape(str(run_dir))}</code> follows them.</p></div>\n")


def _provenance_html(runs: list[RunData]) -> str:
    """Where the report's numbers come from, from the outputs' own provenance: the twin version and git revision
    that wrote them and the SHA-256 of the campaign file (``sha256sum`` of the file a user holds matches it), each
    distinct value once (``""`` when no output carries them)."""
    seen: dict[str, list[str]] = {"twin_version": [], "twin_git_revision": [], "twin_campaign_sha256": []}
    for run in runs:
        for ds in (run.posterior, run.forecast, run.diagnostics, run.qoi):
            if ds is None:
                continue
            for key, values in seen.items():
                value = str(ds.attrs.get(key, "") or "")
                if value and value not in values:
                    values.append(value)
            break
    if not any(seen.values()):
        return ""
    parts = []  # HTML, escaped
    if seen["twin_version"]:
        parts.append("twin " + html.escape(", ".join(seen["twin_version"])))
    if seen["twin_git_revision"]:
        parts.append("git revision " + html.escape(", ".join(seen["twin_git_revision"])))
    if seen["twin_campaign_sha256"]:
        parts.append("from the campaign file of SHA-256 " + ", ".join(f"<code>{html.escape(h)}</code>"
                                                                       for h in seen["twin_campaign_sha256"]))
    return f"<p>Outputs written by {'; '.join(parts)}.</p>\n"


def write_report(run_dir) -> Path:
    """Write ``<run_dir>/report/index.html`` and its PNG images; returns the HTML path.

    Raises
    ------
    OutputError
        If ``run_dir`` is not a directory or holds no twin output at all.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise OutputError(f"report: {run_dir} is not a directory (give the run directory of a campaign)")
    runs = discover(run_dir)
    damaged = damaged_files(run_dir, runs)
    if not damaged and all(r.posterior is None and r.forecast is None and r.diagnostics is None and r.qoi is None
                           and r.decision is None for r in runs):
        from twin.campaign.heartbeat import driver_state
        from twin.campaign.rundir import RunBusy

        if driver_state(run_dir) == "running":
            raise RunBusy(f"report: the campaign in {run_dir} is still running and no experiment has written its "
                          f"outputs yet; run twin report again when one has (twin status {run_dir} follows it)")
        raise OutputError(f"report: {run_dir} holds no twin outputs (posterior.nc, forecast.nc, diagnostics.nc, "
                          "qoi.nc or decision.json); run the campaign first")
    images = run_dir / "report"
    refuse_link_out(images, run_dir)  # a report/ planted as a link would take the report anywhere
    images.mkdir(parents=True, exist_ok=True)
    sections, files = [], []
    unfinished = unfinished_experiments(run_dir)
    verdicts = {run.name: verdict_for(run, unfinished.get(run.name, "")) for run in runs}
    for run in runs:
        text, imgs = _experiment(run, images, verdicts[run.name])
        sections.append(text)
        files += imgs
    failed = {name for name, v in verdicts.items() if v.failed}
    calibration = summarise(run_dir, runs, failed)
    sections.insert(0, campaign_html(run_dir, runs, verdicts, which_to_trust(calibration))
                    + calibration_html(calibration, images, _image))
    if calibration:
        write_text(images / "calibration.json", json.dumps([c.as_dict() for c in calibration], indent=1))
    doc = (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>twin report: {html.escape(run_dir.name)}"
           f"</title><style>{_STYLE}</style></head><body>\n<h1>twin report: {html.escape(run_dir.name)}</h1>\n"
           f"<p>Written {utc_now()} from <code>{html.escape(str(run_dir.resolve()))}</code>; "
           f"{len(runs)} experiment(s), {len(files)} figure(s).</p>\n" + _provenance_html(runs)
           + _unfinished_html(run_dir, unfinished)
           + _damage_html(run_dir, damaged)
           + "\n".join(sections) + "\n</body></html>\n")
    # the answers in one line each, for the terminal (twin report prints them) and for scripts
    write_text(images / "verdicts.json", json.dumps(
        [{"experiment": run.name, "failed": verdicts[run.name].failed, "answer": verdicts[run.name].answer,
          "unfinished": verdicts[run.name].unfinished,
          "number": verdicts[run.name].number,
          "damaged": {_relative(run_dir, p): why for p, why in sorted(run.damaged.items())}} for run in runs],
        indent=1))
    path = write_text(images / "index.html", doc)
    log.info("report: wrote %s (%d figures)", path, len(files))
    return path
