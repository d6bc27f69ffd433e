"""What the conformance kit checks: a model that can be built afresh, here and in a child process.

A :class:`Subject` is a component name plus either a model section of a registered model type (built with
:func:`twin.models.registry.create_model`, exactly as campaigns build it) or the import path of a factory
``f(name, comm) -> Model`` (a model that is not registered, e.g. one defined in a test). Both travel to the child
process of the 1-vs-2-ranks check as JSON (:meth:`Subject.spec`, :func:`from_spec`).

Example sections of the built-in model types live in ``sections/<type>.yaml`` next to this module: small campaign files
whose only model is small enough for the checks to take seconds. Any campaign file serves (``twin check-model TYPE
--config FILE``), which is how a plugin's author checks a model: with the model section of their own campaign.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from twin.core.errors import ConfigError

SECTIONS = Path(__file__).with_name("sections")


@dataclass(frozen=True)
class Subject:
    """A model to check: ``name`` is its component name (its PETSc options prefix is ``name_``).

    Attributes
    ----------
    name : str
    section : ModelConfigBase or None
        A model section of a registered model type.
    factory : str
        Or ``"module:callable"``, ``callable(name, comm) -> Model``, importable in a child process too.
    step : float or None
        The time step of the checks' windows when the model has no ``dt`` and the section no fixed step.
    """

    name: str
    section: Any = None
    factory: str = ""
    step: float | None = None

    @property
    def type_name(self) -> str:
        return self.section.type if self.section is not None else self.factory

    def build(self, comm, solver: dict | None = None):
        """A new model on ``comm``; ``solver`` replaces the section's ``solver:`` options."""
        if self.section is not None:
            from twin.models.registry import create_model

            section = self.section if solver is None else self.section.model_copy(update={"solver": dict(solver)})
            return create_model(self.name, section, comm)
        if solver:
            from twin.core.petsc import set_options

            set_options(f"{self.name}_", solver)
        return load_factory(self.factory)(self.name, comm)

    def fixed_step(self, model) -> float | None:
        """The model's time step: ``model.dt``, the section's fixed step, or :attr:`step`."""
        if self.step is not None:
            return float(self.step)
        dt = getattr(model, "dt", None)
        if dt is None and self.section is not None:
            dt = self.section.fixed_step()
        return None if dt is None else float(dt)

    def spec(self) -> dict:
        """JSON-able description from which :func:`from_spec` rebuilds this subject in another process."""
        section = None
        if self.section is not None:
            section = self.section.model_dump(mode="json", by_alias=True)
        return {"name": self.name, "section": section, "factory": self.factory, "step": self.step}


def from_spec(spec: dict) -> Subject:
    """Inverse of :meth:`Subject.spec` (the section is validated again by its type's class)."""
    from twin.core.kinds import is_import_path, model_type_by_path, model_types

    section = spec.get("section")
    if section is not None:
        mt = model_type_by_path(section["type"]) if is_import_path(section["type"]) else \
            model_types().get(section["type"])
        if mt is None:
            raise ConfigError(f"model type {section['type']!r} is not installed in this environment")
        section = mt.config.model_validate(section)
    return Subject(spec["name"], section, spec.get("factory", ""), spec.get("step"))


def load_factory(path: str) -> Callable:
    """``"module:callable"`` -> the callable (``ConfigError`` naming the path when it cannot be found)."""
    module, _, attr = path.partition(":")
    if not module or not attr:
        raise ConfigError(f"model factory {path!r}: write it as 'module:callable'")
    try:
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"model factory {path!r}: cannot be imported ({type(exc).__name__}: {exc})") from None
    if not callable(obj):
        raise ConfigError(f"model factory {path!r} is a {type(obj).__name__}, not a callable (name, comm) -> Model")
    return obj


def _installed(type_name: str) -> None:
    from twin.core.kinds import is_import_path, model_type_by_path, model_types

    if is_import_path(type_name):
        model_type_by_path(type_name)  # a class named by import path: importable and on the contract, or one line
        return
    types = model_types()
    if type_name not in types:
        raise ConfigError(f"unknown model type {type_name!r}; installed: {', '.join(sorted(types))} (twin info lists "
                          "the kinds and their packages)")


def example_types() -> list[str]:
    """The model types with an example section shipped with the kit."""
    return sorted(p.stem for p in SECTIONS.glob("*.yaml"))


def example_file(type_name: str) -> Path:
    """The shipped campaign file whose model is an example of ``type_name``."""
    _installed(type_name)
    path = SECTIONS / f"{type_name}.yaml"
    if not path.is_file():
        known = ", ".join(example_types())
        raise ConfigError(f"model type {type_name!r}: twin ships no example section for it (it has: {known}); give "
                          "a campaign file with such a model: twin check-model TYPE --config FILE")
    return path


def subject_from_file(type_name: str, path, component: str | None = None, step: float | None = None) -> Subject:
    """The model of type ``type_name`` in campaign file ``path`` (the one named ``component`` if several)."""
    from twin.config.loader import load_campaign

    _installed(type_name)
    models = load_campaign(path).config.models
    found = {n: s for n, s in models.items() if s.type == type_name and (component is None or n == component)}
    if not found:
        what = f"component {component!r} of type {type_name!r}" if component else f"model of type {type_name!r}"
        raise ConfigError(f"{path}: models: no {what} (it has: "
                          f"{', '.join(f'{n} ({s.type})' for n, s in models.items())})")
    if len(found) > 1:
        raise ConfigError(f"{path}: models: {len(found)} components of type {type_name!r} "
                          f"({', '.join(found)}); choose one with --component NAME")
    (name, section), = found.items()
    return Subject(name, section, step=step)


def example_section(type_name: str):
    """The shipped example section of ``type_name`` (the model section of ``sections/<type>.yaml``)."""
    return subject_from_file(type_name, example_file(type_name)).section


def example_subject(type_name: str, step: float | None = None) -> Subject:
    return subject_from_file(type_name, example_file(type_name), step=step)
