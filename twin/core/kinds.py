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

For quick work a campaign may also name a model class by import path, ``type: "mypkg.models:Lorenz63"``
(:func:`model_type_by_path`): no packaging, no entry point, no kind (so no networks, decisions or report panels of
its own). What that may import is bounded by what the campaign's author wrote: a dotted module path and a class
name, resolved by Python's import system from the installed packages and ``PYTHONPATH`` (never a file path, never
code, never a name read from a data file); every process that reads the campaign, Parsl workers included, imports
it again, so the module must be importable there too.
"""

from __future__ import annotations

import importlib
import re
from collections import abc
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from typing import Any, Callable, Literal, Sequence

from twin.core.errors import ConfigError

#: The entry-point group that kinds register in.
GROUP = "twin.kinds"


@dataclass(frozen=True)
class ModelType:
    """A model ``type:``: its configuration section (a pydantic model with ``type: Literal[name]``) and the class
    whose ``from_config(name, section, comm)`` builds it (:class:`twin.models.base.Model`).

    ``adjoint``: whether the class gives :meth:`~twin.models.base.Model.adjoint`, which 4D-Var needs; declared here so
    that ``twin validate`` refuses 4D-Var on a type without one before anything is built (the class's module, and
    PETSc, are not imported to ask). ``None``: not declared (4D-Var then finds out when the model is built)."""

    name: str
    config: type
    model: Callable[[], type]
    adjoint: bool | None = None


@dataclass(frozen=True)
class NetworkType:
    """An observation network ``type:`` of ``assimilation.observations``: its configuration section (with
    ``type: Literal[name]``) and ``build(spec, model, name) -> LinearObservations`` (collective).

    A network of *measured* observations (no truth; the campaign's path of ``type: file`` networks,
    :mod:`twin.observations.file_network`) gives ``read(spec, path, model, start) -> ObservationTable`` for each path of
    ``spec.files()`` (``start``: the calendar start or ``None``) and, optionally, ``sites(spec, table, ok, model) ->
    (site of every row, H, positions, variable of each site)``, the operator of its sites (default: interpolation of
    the table's state variables at its positions); ``build`` is then not used.

    A synthetic network whose rows are not point values of a state variable (gauges of a derived quantity) may give
    ``export(spec, part, model) -> Stations`` (:class:`twin.observations.export.Stations`): how a twin experiment's
    ``observations.nc`` writes its rows, one station per row, so that the kind's reading network assimilates them
    again (``part``: the network's own rows on the model it observes, a coupled campaign's component).

    A reading network that ``twin assimilate`` may continue has a ``deliveries`` list in its configuration (the files
    that arrived later, read after ``file``; ``spec.files()`` returns them all). One whose files name other files (a
    visit table naming its images) gives ``companions(path) ->
    [Path]``: the files ``path`` names, each below its directory; a live twin keeps them with the file it is
    delivered (:mod:`twin.campaign.deliveries`) and counts them in the delivery's checksum.

    A reading network may also give ``check(spec, path, model, start) -> None``: what reading the file ``path`` checks
    without the built model, raising :class:`~twin.core.errors.ObservationError` in one line. ``model`` is what
    validation knows of the observed model, from its section's metadata: ``time_units`` (the campaign's clock),
    ``length_units`` and ``grid`` with ``dim``, ``extent`` and ``contains(points)`` (inside the box ``extent``).
    ``twin validate``, ``twin run`` and ``twin submit`` call it for every file of the network before anything runs
    (:mod:`twin.observations.preflight`), so that a broken file is refused with exit status 2 at its key of the
    campaign file, not when its experiment starts (after a Slurm job's wait in the queue). Without it the files are
    read when the experiment starts."""

    name: str
    config: type
    build: Callable[..., Any]
    read: Callable[..., Any] | None = None
    sites: Callable[..., Any] | None = None
    export: Callable[..., Any] | None = None
    companions: Callable[..., Any] | None = None
    check: Callable[..., Any] | None = None


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


#: kind name -> where it comes from (its entry point and the package that installs it), for the lines that name it
_ORIGIN: dict[str, str] = {}


def _origin(ep) -> str:
    """``entry point 'name = module:KIND' of package dist 1.0``: what a line about a kind names."""
    dist = getattr(ep, "dist", None)
    package = f" of package {dist.name} {dist.version}" if dist is not None and getattr(dist, "name", None) else ""
    return f"entry point '{ep.name} = {ep.value}'{package}"


def _load(ep) -> TwinKind:
    where = f"entry point '{ep.name} = {ep.value}' (group {GROUP})"
    try:
        obj = ep.load()
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - a broken plugin must name itself, whatever it raised
        raise ConfigError(f"{where}: cannot be imported ({type(exc).__name__}: {exc}); fix or uninstall that "
                          "package") from None
    if isinstance(obj, type) and issubclass(obj, TwinKind):
        obj = obj()
    if not isinstance(obj, TwinKind):
        raise ConfigError(f"{where}: is a {type(obj).__name__}, not a twin.core.kinds.TwinKind")
    if obj.name != ep.name:
        raise ConfigError(f"{where}: the kind calls itself {obj.name!r}; the entry point's name must be the kind's "
                          "name")
    _check_declarations(where, obj)
    return obj


def _check_declarations(where: str, kind: TwinKind) -> None:
    """The kind's ``model_types``, ``network_types`` and ``decision_types`` answer, each a sequence of its class:
    asked once here so that a plugin that raises or returns something else is named in one line, not a traceback
    from whichever command asks first."""
    for method, cls in (("model_types", ModelType), ("network_types", NetworkType),
                        ("decision_types", DecisionType)):
        try:
            got = getattr(kind, method)()
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - the plugin's own code failed: name it
            raise ConfigError(f"{where}: {type(kind).__name__}.{method}() raised {type(exc).__name__}: {exc}; fix "
                              "or uninstall that package") from None
        if isinstance(got, (str, bytes)) or not isinstance(got, abc.Sequence) \
                or not all(isinstance(x, cls) for x in got):
            raise ConfigError(f"{where}: {type(kind).__name__}.{method}() returned {type(got).__name__} "
                              f"{str(got)[:80]!r}, not a sequence of twin.core.kinds.{cls.__name__}; fix or uninstall "
                              "that package")


@lru_cache(maxsize=1)
def kinds() -> dict[str, TwinKind]:
    """Every installed kind by name, sorted by name (entry points of group :data:`GROUP`)."""
    found: dict[str, TwinKind] = {}
    origins: dict[str, str] = {}
    for ep in sorted(metadata.entry_points(group=GROUP), key=lambda e: e.name):
        if ep.name in found:
            raise ConfigError(f"twin kind {ep.name!r} is registered twice (group {GROUP}): by the "
                              f"{origins[ep.name]} and by the {_origin(ep)}; uninstall one of the packages")
        found[ep.name], origins[ep.name] = _load(ep), _origin(ep)
    _ORIGIN.update(origins)
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
                    raise ConfigError(f"{what} {name!r} is declared by the kinds {owner[name]!r} "
                                      f"({_ORIGIN.get(owner[name], 'built in')}) and {kind.name!r} "
                                      f"({_ORIGIN.get(kind.name, 'built in')}); uninstall one of them")
                owner[name] = kind.name


def reads_files(spec) -> bool:
    """Whether the observation network ``spec`` (a section of ``assimilation.observations``) assimilates measured
    observations from files: ``type: file``, or a kind's network type with ``read`` (:class:`NetworkType`). A campaign
    observed through such networks has no nature run and no truth."""
    kind = getattr(spec, "type", None)
    if kind == "file":
        return True
    declared = network_types().get(kind)
    return declared is not None and declared.read is not None


def model_types() -> dict[str, ModelType]:
    """The model types of the installed kinds, and those named by import path that this process resolved
    (:func:`model_type_by_path`; a campaign's are resolved when it is validated)."""
    return {**{m.name: m for k in kinds().values() for m in k.model_types()}, **_BY_PATH}


# -- model classes named by import path -------------------------------------------------------------------------------
#: ``package.module:Class``: a dotted module path, a colon, a class (or a dotted attribute path to one)
IMPORT_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*"
                         r"(\.[A-Za-z_][A-Za-z0-9_]*)*")
#: the import paths resolved in this process: resolving is deterministic, and a path names one class per process
_BY_PATH: dict[str, ModelType] = {}
_WHERE = ("it must be importable wherever twin reads the campaign (Parsl workers and Slurm jobs included): install "
          "its package, or put its directory on PYTHONPATH (on Slurm: resources.worker_init)")


def is_import_path(type_name: str) -> bool:
    """Whether a model ``type:`` names a class by import path (it has a colon) rather than an installed kind's type."""
    return isinstance(type_name, str) and ":" in type_name


def _defines(cls: type, module: str, name: str) -> bool:
    """``cls`` derives from ``module.name``, found by name: this layer does not import the layers that define the
    model contract and the model sections."""
    return any(c.__module__ == module and c.__name__ == name for c in getattr(cls, "__mro__", ()))


def model_type_by_path(path: str) -> ModelType:
    """The model type of a class named by import path, ``"package.module:Class"``.

    The class is a :class:`twin.models.base.Model` with ``from_config(name, section, comm)`` and a class attribute
    ``config_class``: the pydantic class of its YAML section (a :class:`twin.config.common.ModelConfigBase`). The
    section is validated by a subclass of it whose ``type`` is ``Literal[path]``; the model is built by a subclass of
    the class whose ``type_name`` is ``path`` (the class itself may answer to another type, e.g. when a kind declares
    it too). Nothing is imported unless ``path`` is a dotted module path and an attribute path.

    Raises
    ------
    ConfigError
        One line: a path that is not ``package.module:Class``, a module that cannot be imported (and where it must
        be importable), a missing attribute, or a class that is not on the model contract.
    """
    found = _BY_PATH.get(path)
    if found is not None:
        return found
    if not isinstance(path, str) or len(path) > 300 or not IMPORT_PATH.fullmatch(path):
        raise ConfigError(f"model type {path!r}: a class by import path is written 'package.module:Class' (dotted "
                          "names only: no file paths, no code)")
    module_name, _, attr = path.partition(":")
    from twin.core.petsc import singleton_settings

    try:
        with singleton_settings():  # the module imports the model contract, which starts PETSc, and MPI with it
            obj = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name) and module_name[len(exc.name):len(exc.name) + 1] in ("", "."):
            raise ConfigError(f"model type {path!r}: no module named {exc.name!r}; {_WHERE}") from None
        raise ConfigError(f"model type {path!r}: importing module {module_name!r} failed ({type(exc).__name__}: "
                          f"{exc}); {_WHERE}") from None
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the module's own code failed: name it
        raise ConfigError(f"model type {path!r}: importing module {module_name!r} failed ({type(exc).__name__}: "
                          f"{exc}); fix that module") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"model type {path!r}: {getattr(obj, '__name__', module_name)!r} has no attribute "
                              f"{part!r}")
        obj = getattr(obj, part)
    return _register_path(path, obj)


def _register_path(path: str, cls: Any) -> ModelType:
    """Check that ``cls`` is on the model contract and remember its model type (see :func:`model_type_by_path`)."""
    if not isinstance(cls, type):
        raise ConfigError(f"model type {path!r}: is a {type(cls).__name__}, not a class; name a subclass of "
                          "twin.models.base.Model")
    if not _defines(cls, "twin.models.base", "Model"):
        raise ConfigError(f"model type {path!r}: class {cls.__qualname__} is not on the model contract: derive it "
                          "from twin.models.base.Model (docs/your-own-model.md)")
    if not callable(getattr(cls, "from_config", None)):
        raise ConfigError(f"model type {path!r}: class {cls.__qualname__} has no classmethod from_config(name, "
                          "section, comm)")
    section = getattr(cls, "config_class", None)
    if not (isinstance(section, type) and _defines(section, "twin.config.common", "ModelConfigBase")):
        raise ConfigError(f"model type {path!r}: class {cls.__qualname__} declares no config_class, the pydantic "
                          "class of its YAML section: set config_class = <a subclass of "
                          "twin.config.common.ModelConfigBase> on the class")
    import pydantic

    try:
        config = pydantic.create_model(section.__name__, __base__=section, __module__=section.__module__,
                                       type=(Literal[path], ...))
    except Exception as exc:  # noqa: BLE001 - a section class pydantic cannot extend must still give one line
        raise ConfigError(f"model type {path!r}: its config_class {section.__qualname__} cannot be used as a "
                          f"section ({type(exc).__name__}: {exc})") from None
    config.__qualname__ = section.__qualname__
    model = type(cls)(cls.__name__, (cls,), {"type_name": path, "__module__": cls.__module__,
                                        "__qualname__": cls.__qualname__, "__doc__": cls.__doc__})
    # an adjoint: the class's ``adjoint`` is not the contract's own (which raises), found by name as above
    method = getattr(cls, "adjoint", None)
    adjoint = method is not None and not (getattr(method, "__module__", "") == "twin.models.base"
                                          and getattr(method, "__qualname__", "") == "Model.adjoint")
    found = _BY_PATH[path] = ModelType(path, config, lambda: model, adjoint=adjoint)
    return found


def network_types() -> dict[str, NetworkType]:
    return {n.name: n for k in kinds().values() for n in k.network_types()}


def decision_types() -> dict[str, DecisionType]:
    return {d.key: d for k in kinds().values() for d in k.decision_types()}


def model_class(mt: ModelType) -> type:
    """The model class of ``mt``: its module is imported now (a kind imports it only when a model is built, so that
    ``twin validate`` stays cheap). A module that cannot be imported (a dependency of the plugin missing) is one line
    naming the model type, its kind and the package that installs it, not a bare ``ModuleNotFoundError``.

    Raises
    ------
    ConfigError
        When the class cannot be had.
    """
    try:
        return mt.model()
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the plugin's own code failed: name it
        kind = kind_of(mt.name)
        origin = f"kind {kind.name!r}, {_ORIGIN.get(kind.name, 'built in')}" if kind is not None else "no kind"
        raise ConfigError(f"model type {mt.name!r} ({origin}): its model class cannot be imported "
                          f"({type(exc).__name__}: {exc}); install what it needs, or fix or uninstall that package") \
            from None


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
