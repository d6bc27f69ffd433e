"""Twin kinds: what a package contributes to twin, and the registry that finds them through entry points.

A *kind* is one family of twins (a tumour, a shallow-water atmosphere, a structure, ...): its model types (the YAML
``type:`` of a ``models:`` section and the class that builds from it), its observation networks (``type:`` of an
entry of ``assimilation.observations``), its decision sections (keys of ``decision:``), what its experiments add to a
decision record, and its report panels and verdicts. The general layers (configuration, observations,
assimilation, campaign, decision, report) ask this registry; none of them names a kind.

Every kind, the built-in ones included, is found through the Python entry-point group ``twin.kinds``: a package
declares in its ``pyproject.toml``::

    [project.entry-points."twin.kinds"]
    glacier = "my_glacier.kind:KIND"

where ``KIND`` is a :class:`TwinKind` (an instance, or a subclass that takes no arguments). Installing the package
(``pip install -e .``) is all it takes; ``twin info`` lists the kinds found. See ``docs/kinds.md``.

The kinds' contents are declared by methods, not attributes, so that loading the registry (``twin validate``) imports
only what is asked for: a kind's model module (and PETSc) is imported when a model of that kind is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from typing import Any, Callable, Sequence

from twin.core.errors import ConfigError

#: The entry-point group that kinds register in.
GROUP = "twin.kinds"


@dataclass(frozen=True)
class ModelType:
    """A model ``type:``: its configuration section (a pydantic model with ``type: Literal[name]``) and the class
    whose ``from_config(name, section, comm)`` builds it (:class:`twin.models.base.Model`)."""

    name: str
    config: type
    model: Callable[[], type]


@dataclass(frozen=True)
class NetworkType:
    """An observation network ``type:`` of ``assimilation.observations``: its configuration section (with
    ``type: Literal[name]``) and ``build(spec, model, name) -> LinearObservations`` (collective)."""

    name: str
    config: type
    build: Callable[..., Any]


@dataclass(frozen=True)
class DecisionType:
    """A key of the ``decision:`` section owned by a kind: its configuration section and, optionally,
    ``decide(setup, comm, model, ensemble, dcfg, record, window) -> record``, which returns the decision record with
    what the kind adds (collective). ``window`` is what the kind's :meth:`TwinKind.window_record` returned, or
    ``None``. A key without ``decide`` is read by another decision of the same kind."""

    key: str
    config: type
    decide: Callable[..., dict] | None = None


class TwinKind:
    """What one kind contributes. Subclass it and override what the kind has; every method defaults to nothing."""

    #: short name (letters, digits, ``_``), shown by ``twin info``
    name: str = ""
    #: one line for ``twin info``
    description: str = ""

    def model_types(self) -> Sequence[ModelType]:
        return ()

    def network_types(self) -> Sequence[NetworkType]:
        return ()

    def decision_types(self) -> Sequence[DecisionType]:
        return ()

    def window_record(self, setup, comm, model, window, through) -> dict | None:
        """After a calibration window (ES-MDA, 4D-Var) of a model of this kind: files the kind writes about the
        window and what its decisions need (``None``: nothing). ``through`` is the window reanalysis
        (:func:`twin.campaign.decide.reanalysis`). Its ``"calibration"`` entry, if any, goes into the decision
        record. Collective."""
        return None

    def report_panels(self) -> Sequence[Callable]:
        """Functions ``(RunData, out_dir) -> Panel`` drawn after the general panels (a panel without its data is
        ``Panel(title, optional=True)`` and is left out)."""
        return ()

    def decision_panel(self, data, out) -> Any | None:
        """The report's decision panel for a decision record this kind wrote (``None``: not this kind's)."""
        return None

    def verdicts(self) -> Sequence[Callable]:
        """Functions ``RunData -> Verdict | None``, tried before the general verdicts."""
        return ()


def _load(ep) -> TwinKind:
    where = f"entry point '{ep.name} = {ep.value}' (group {GROUP})"
    try:
        obj = ep.load()
    except Exception as exc:  # a broken plugin must name itself, whatever it raised
        raise ConfigError(f"{where}: cannot be imported ({type(exc).__name__}: {exc}); fix or uninstall that "
                          "package") from None
    if isinstance(obj, type) and issubclass(obj, TwinKind):
        obj = obj()
    if not isinstance(obj, TwinKind):
        raise ConfigError(f"{where}: is a {type(obj).__name__}, not a twin.core.kinds.TwinKind")
    if obj.name != ep.name:
        raise ConfigError(f"{where}: the kind calls itself {obj.name!r}; the entry point's name must be the kind's "
                          "name")
    return obj


@lru_cache(maxsize=1)
def kinds() -> dict[str, TwinKind]:
    """Every installed kind by name, sorted by name (entry points of group :data:`GROUP`)."""
    found: dict[str, TwinKind] = {}
    for ep in sorted(metadata.entry_points(group=GROUP), key=lambda e: e.name):
        if ep.name in found:
            raise ConfigError(f"twin kind {ep.name!r} is registered twice (entry points of group {GROUP}); "
                              "uninstall one of the packages")
        found[ep.name] = _load(ep)
    if not found:
        raise ConfigError(f"no twin kinds are installed (entry-point group {GROUP} is empty): install twin with "
                          "'pip install -e .' (make setup) so its built-in kinds register")
    _check_unique(found)
    return found


def _check_unique(found: dict[str, TwinKind]) -> None:
    """Two kinds may not claim the same model type, network type or decision key."""
    for what, get in (("model type", lambda k: [m.name for m in k.model_types()]),
                      ("observation network type", lambda k: [n.name for n in k.network_types()]),
                      ("decision section", lambda k: [d.key for d in k.decision_types()])):
        owner: dict[str, str] = {}
        for kind in found.values():
            for name in get(kind):
                if name in owner:
                    raise ConfigError(f"{what} {name!r} is declared by the kinds {owner[name]!r} and "
                                      f"{kind.name!r}; uninstall one of them")
                owner[name] = kind.name


def model_types() -> dict[str, ModelType]:
    return {m.name: m for k in kinds().values() for m in k.model_types()}


def network_types() -> dict[str, NetworkType]:
    return {n.name: n for k in kinds().values() for n in k.network_types()}


def decision_types() -> dict[str, DecisionType]:
    return {d.key: d for k in kinds().values() for d in k.decision_types()}


def kind_of(type_name: str) -> TwinKind | None:
    """The kind that declares model type ``type_name`` (``None`` for a coupled model or an unknown type)."""
    for kind in kinds().values():
        if any(m.name == type_name for m in kind.model_types()):
            return kind
    return None


def network_model_types(network_type: str) -> tuple[str, ...] | None:
    """The model types a kind's network type observes: those of the kind that declares it (``None``: not a kind's
    network type, e.g. the general ``points``)."""
    for kind in kinds().values():
        if any(n.name == network_type for n in kind.network_types()):
            return tuple(m.name for m in kind.model_types())
    return None
