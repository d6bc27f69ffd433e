"""Checks of a campaign against what its model sections say about their models (:mod:`twin.config.metadata`), run
when the file is validated: nothing is built or solved, and a campaign that passes is not refused later for any of
these reasons.

* every observation network fits the model it observes: a kind's network type only observes that kind's models
  (``gridded`` is a shallow-water network, ``strain_gauges`` a structure's); ``component`` and ``variable`` /
  ``variables`` name state variables the model has; positions (``points``, after converting their ``units`` to the
  model's length units) lie inside the model's domain; in a coupled campaign the network names its component;
* ``decision.qois`` and ``decision.exceedance_limits`` name quantities of interest the model has (single-model
  campaigns);
* 4D-Var's parameter controls are parameters of the model named by ``assimilation.model``;
* each coupling route's ``from`` field is one its component exports, its ``to`` field one its component imports,
  and its ``site`` a point inside the sending component's domain;
* a calendar start (``timeline.start`` as a date) only with models whose time has units;
* observation files (``type: file`` networks and the kinds' networks read from files) alone, not mixed with synthetic
  networks (every method: the filters, ES-MDA and 4D-Var); in a coupled campaign each names its component like any
  network.

A model section that cannot describe its model (:meth:`twin.config.common.ModelConfigBase.metadata` raises
``NotImplementedError``) is checked when it is built instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from twin.config.messages import short
from twin.core.kinds import network_model_types
from twin.core.units import convert

Problems = list[tuple[tuple, str]]


def _metadata(cfg) -> dict[str, Any]:
    out = {}
    for name, section in cfg.models.items():
        try:
            out[name] = section.metadata()
        except NotImplementedError:
            continue
    return out


def _coupled(cfg) -> bool:
    return getattr(cfg, "coupling", None) is not None


def observed_model(cfg, net) -> str | None:
    """The name of the model the network ``net`` observes: its ``model``, else the model 4D-Var names, else the
    campaign's only model (not coupled); ``None`` when the campaign does not say (:func:`check_models` refuses it).
    The name may be no model of the campaign (refused too)."""
    target = getattr(net, "model", None)
    if target is None and getattr(cfg.assimilation, "method", None) == "4dvar":
        target = cfg.assimilation.model  # 4D-Var observes the model it names
    if target is None and not _coupled(cfg) and len(cfg.models) == 1:
        target = next(iter(cfg.models))
    return target


def _check_network(i: int, net, cfg, metas) -> Problems:
    where = ("assimilation", "observations", i)
    target = observed_model(cfg, net)
    if target is None:
        return [((*where, "model"), f"the campaign has {len(cfg.models)} models ({', '.join(cfg.models)}): name "
                                    "the one this network observes with 'model:'")]
    if target not in cfg.models:
        return [((*where, "model"), f"{short(target)} is not a model of the campaign; its models are "
                                    f"{sorted(cfg.models)}")]
    meta = metas.get(target)
    if meta is None:
        return []
    observes = network_model_types(net.type)
    if observes is not None and meta.type not in observes:
        return [((*where, "type"), f"a '{net.type}' network observes models of type {', '.join(observes)}; model "
                                   f"'{target}' is of type '{meta.type}' (use 'points' or 'all_points' for it)")]
    problems: Problems = []
    names = list(meta.state_names)
    component = getattr(net, "component", None)
    if component is not None and component >= meta.dof:
        problems.append(((*where, "component"), f"model '{target}' has {meta.dof} state component(s) {names}, no "
                                                f"component {component}"))
    variables = [getattr(net, "variable", None)] + list(getattr(net, "variables", None) or [])
    for v in filter(None, variables):
        if v not in names:
            key = "variable" if v == getattr(net, "variable", None) else "variables"
            problems.append(((*where, key), f"{short(v)} is not a state variable of model '{target}'; it has {names}"))
    points = getattr(net, "points", None)
    if points is not None:
        problems += _check_points(where, points, getattr(net, "units", None), meta, target)
    return problems


def _check_points(where: tuple, points, units: str | None, meta, target: str) -> Problems:
    wrong = [j for j, q in enumerate(points) if len(q) != meta.dim]
    if wrong:
        return [((*where, "points", wrong[0]), f"points need {meta.dim} coordinate(s) each for the {meta.dim}-D "
                                               f"domain of model '{target}'; this one has {len(points[wrong[0]])}")]
    p = np.asarray(points, dtype=float).reshape(-1, meta.dim)
    if units:
        try:
            p = p * float(convert(1.0, units, meta.length_units))
        except ValueError as exc:
            return [((*where, "units"), f"{short(units)} is not a length unit convertible to the model's "
                                        f"{meta.length_units!r} ({type(exc).__name__})")]
    bad = meta.outside(p)
    if bad.size:
        j = int(bad[0])
        given = f" {units}" if units else ""
        box = [[float(f"{a:.6g}"), float(f"{b:.6g}")] for a, b in meta.extent]
        return [((*where, "points", j), f"point {short(list(points[j]))}{given} lies outside the domain of "
                                        f"model '{target}', {box} {meta.length_units}"
                                        + (f" ({bad.size} points outside)" if bad.size > 1 else ""))]
    return []


def _check_decision(cfg, metas) -> Problems:
    d = getattr(cfg, "decision", None)
    if d is None or _coupled(cfg) or len(cfg.models) != 1:
        return []
    meta = metas.get(next(iter(cfg.models)))
    if meta is None or meta.qois is None:
        return []
    problems = []
    for j, q in enumerate(d.qois):
        if q not in meta.qois:
            problems.append((("decision", "qois", j), f"{short(q)} is not a quantity of interest of the model; it has "
                                                      f"{list(meta.qois)}"))
    return problems


def _check_controls(cfg, metas) -> Problems:
    a = cfg.assimilation
    if getattr(a, "method", None) != "4dvar":
        return []
    meta = metas.get(a.model)
    if meta is None or not meta.parameters:
        return []
    return [(("assimilation", "parameters", j, "name"), f"{short(p.name)} is not a parameter of model '{a.model}'; it "
                                                         f"has {list(meta.parameters)}")
            for j, p in enumerate(a.parameters) if p.name not in meta.parameters]


def _check_calendar(cfg) -> Problems:
    if cfg.timeline.calendar_start is None:
        return []
    plain = [name for name, section in cfg.models.items() if getattr(section, "time_units", "s") == "1"]
    if plain:
        return [(("timeline", "start"), f"model(s) {', '.join(plain)} count time without units (dimensionless "
                                        "model time): a calendar start means nothing to them; give start as a number")]
    return []


def _check_files(cfg) -> Problems:
    nets = getattr(cfg.assimilation, "observations", None) or []
    from twin.core.kinds import reads_files

    files = [i for i, n in enumerate(nets) if reads_files(n)]
    if not files:
        return []
    if len(files) != len(nets):
        return [(("assimilation", "observations", files[0]), "a campaign observes a real system through files or "
                                                            "a twin experiment through synthetic networks, not both: "
                                                            "give only type: file networks or none")]
    method = getattr(cfg.assimilation, "method", None)
    if method in ("esmda", "4dvar"):
        return [(("assimilation", "observations", i, "superobs"),
                 f"super-observations are made per cycle, for the filters (etkf, enkf, letkf); {method} uses every "
                 "observation at its own model step: use thinning instead")
                for i in files if getattr(nets[i], "superobs", None) is not None]
    return []


def _check_routes(cfg, metas) -> Problems:
    """Each coupling route's ``from`` field is one its component exports and its ``to`` field one its component
    imports (a misspelt ``tissue.eigenstrian`` was found when the coupled model was built, after a Slurm job's wait)."""
    import difflib

    coupling = getattr(cfg, "coupling", None)
    problems: Problems = []
    for i, route in enumerate(getattr(coupling, "routes", None) or []):
        for key, (comp, field), what in (("from", route.source, "exports"), ("to", route.target, "imports")):
            meta = metas.get(comp)
            names = getattr(meta, what, None) if meta is not None else None
            if names is None or field in names:
                continue
            close = difflib.get_close_matches(field, names, n=1, cutoff=0.6)
            hint = f"; did you mean '{comp}.{close[0]}'?" if close else ""
            said = f"the fields {list(names)}" if names else "no field"
            problems.append((("coupling", "routes", i, key), f"component '{comp}' ({meta.type}) {what} {said}, not "
                                                             f"{short(field)}{hint}"))
        meta = metas.get(route.source[0])
        site = route.site
        if site is None or meta is None:
            continue
        where = ("coupling", "routes", i, "site", "point")
        if len(site.point) != meta.dim:
            problems.append((where, f"the site has {len(site.point)} coordinate(s); the domain of '{route.source[0]}' "
                                    f"is {meta.dim}-D"))
        elif len(meta.outside(np.array([convert(np.asarray(site.point, dtype=float), site.units,
                                                meta.length_units)]))):
            box = " x ".join(f"[{lo:g}, {hi:g}]" for lo, hi in meta.extent)
            problems.append((where, f"the site {site.point} {site.units} lies outside the domain of "
                                    f"'{route.source[0]}' ({box} {meta.length_units})"))
    return problems


def check_models(cfg) -> Problems:
    """``(key path, message)`` for every reference of the campaign that its models' metadata refute."""
    metas = _metadata(cfg)
    problems: Problems = _check_calendar(cfg) + _check_files(cfg)
    a = cfg.assimilation
    for i, net in enumerate(getattr(a, "observations", None) or []):
        problems += _check_network(i, net, cfg, metas)
    return (problems + _check_background(cfg, metas) + _check_decision(cfg, metas) + _check_controls(cfg, metas)
            + _check_adjoint(cfg) + _check_routes(cfg, metas))


def _check_adjoint(cfg) -> Problems:
    """4D-Var on a model type that declares it has no adjoint (:attr:`twin.core.kinds.ModelType.adjoint`): refused
    here, not found by the minimiser's first gradient."""
    a = cfg.assimilation
    section = cfg.models.get(getattr(a, "model", None)) if getattr(a, "method", None) == "4dvar" else None
    if section is None:
        return []
    from twin.core.kinds import model_types

    declared = model_types().get(section.type)
    if declared is None or declared.adjoint is not False:
        return []
    return [(("assimilation", "method"), f"4D-Var needs the adjoint of model '{a.model}', and model type "
                                         f"{short(section.type)} has none: use an ensemble method (etkf, enkf, letkf, "
                                         "esmda) or give the model an adjoint (docs/your-own-model.md)")]


def _check_background(cfg, metas) -> Problems:
    """The keys of an ``assimilation.background_std`` mapping: state variables of the (only) model, or components
    and ``<component>.<variable>`` of a coupled one (which components exist is the section's own check)."""
    given = getattr(cfg.assimilation, "background_std", None)
    if not isinstance(given, dict):
        return []
    if _coupled(cfg):
        known = {c: None for c in cfg.coupling.components}
        known.update({f"{c}.{v}": None for c in cfg.coupling.components if c in metas
                      for v in metas[c].state_names})
        unknown = [k for k in given if k not in known and k.partition(".")[0] in metas]
    else:
        name = observed_model(cfg, None) if len(cfg.models) == 1 else None
        if name is None or name not in metas:
            return []
        known = {v: None for v in metas[name].state_names}
        unknown = [k for k in given if k not in known]
    if not unknown:
        return []
    return [(("assimilation", "background_std"), f"{', '.join(short(k) for k in unknown)}: no state variable"
                                                 f"{' or component' if _coupled(cfg) else ''}; the keys it takes are "
                                                 f"{', '.join(known)}")]
