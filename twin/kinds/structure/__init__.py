"""The structure kind: 2-D linear elasticity with a damage field, static and dynamic, on PETSc (:mod:`.model`),
strain gauges (:mod:`.gauges`; their readings as files, written by a twin experiment and read by a real structure's
twin: :mod:`.readings`), the maintenance decision and sensor placement (:mod:`.decision`, :mod:`.decide`) and
the report's damage and gauge panels (:mod:`.report`)."""

from __future__ import annotations

from importlib import import_module

from twin.core.kinds import DecisionType, ModelType, NetworkType, TwinKind

_EXPORTS = {"Material": "elements", "StructureModel": "model"}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _readings(function: str):
    """A function of :mod:`.readings`, imported when called (loading the registry stays cheap)."""
    return lambda *args: getattr(import_module(f"{__name__}.readings"), function)(*args)


class Structure(TwinKind):
    name = "structure"
    description = "damaged elastic structures under load, strain gauges, inspection decisions and sensor placement"

    def model_types(self):
        from twin.kinds.structure.config import StructureConfig

        return (ModelType("structure", StructureConfig,
                          lambda: import_module("twin.kinds.structure.model").StructureModel, adjoint=True),)

    def network_types(self):
        from twin.kinds.structure.config import StrainGaugeReadingsNetwork, StrainGaugesNetwork

        return (NetworkType("strain_gauges", StrainGaugesNetwork,
                            lambda *a: import_module("twin.kinds.structure.gauges").build_strain_gauges(*a),
                            export=_readings("export")),
                # a real structure's gauges from files (twin.kinds.structure.readings): no truth
                NetworkType("strain_gauge_readings", StrainGaugeReadingsNetwork, _readings("build"),
                            read=_readings("read"), sites=_readings("sites"),
                            # reading needs the units and the box of the structure only: it is its own check
                            check=_readings("read")))

    def decision_types(self):
        from twin.kinds.structure.config import SensorDesignSpec, StructureDecisionSpec

        return (DecisionType("structure", StructureDecisionSpec,
                             lambda *a: import_module("twin.kinds.structure.decide").decide(*a)),
                DecisionType("sensors", SensorDesignSpec))

    def report_panels(self):
        from twin.kinds.structure.report import PANELS

        return PANELS

    def decision_panel(self, data, out):
        from twin.kinds.structure.report import decision_panel

        return decision_panel(data, out)

    def verdicts(self):
        from twin.kinds.structure.report import inspection_verdict

        return (inspection_verdict,)


KIND = Structure()
