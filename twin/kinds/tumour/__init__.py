"""The tumour kind: reaction-diffusion tumour growth with radiotherapy and chemotherapy on PETSc (:mod:`.model`),
imaging observations (:mod:`.imaging`; a real patient's imaging visits from NIfTI files: :mod:`.visits`), synthetic patients (:mod:`.synthetic_patient`), the treatment decision
(:mod:`.decision`, :mod:`.decide`) and the report's patient panels (:mod:`.report`)."""

from __future__ import annotations

from importlib import import_module

from twin.core.kinds import DecisionType, ModelType, NetworkType, TwinKind

#: public names of the kind, imported on first use (``from twin.kinds.tumour import TumourModel``)
_EXPORTS = {"TumourModel": "model", "GRADIENT_PARAMETERS": "adjoint", "Tissue": "phantom", "box_tissue": "phantom",
            "brain_phantom": "phantom", "TreatmentPlan": "treatment", "Fraction": "treatment",
            "DrugDose": "treatment", "survival_fraction": "treatment"}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _visits(function: str):
    """A function of :mod:`.visits`, imported when called (loading the registry stays cheap)."""
    return lambda *args: getattr(import_module(f"{__name__}.visits"), function)(*args)


class Tumour(TwinKind):
    name = "tumour"
    description = "tumour growth under radiotherapy and chemotherapy, imaged cellularity, treatment choice"

    def model_types(self):
        from twin.kinds.tumour.config import TumourConfig

        return (ModelType("tumour", TumourConfig, lambda: import_module("twin.kinds.tumour.model").TumourModel, adjoint=True),)

    def network_types(self):
        from twin.kinds.tumour.config import ImagingNetwork, ImagingVisitsNetwork

        return (NetworkType("imaging", ImagingNetwork,
                            lambda *a: import_module("twin.kinds.tumour.imaging").build_imaging(*a)),
                # a real patient's visits from files (twin.kinds.tumour.visits): no truth, the file path of campaigns
                NetworkType("imaging_visits", ImagingVisitsNetwork, _visits("build"), read=_visits("read"),
                            sites=_visits("sites"), companions=_visits("companions"), check=_visits("check")))

    def decision_types(self):
        from twin.kinds.tumour.config import OncologyConfig

        return (DecisionType("oncology", OncologyConfig,
                             lambda *a: import_module("twin.kinds.tumour.decide").decide(*a)),)

    def window_record(self, setup, comm, model, window, through):
        from twin.kinds.tumour.decide import window_record

        return window_record(setup, comm, model, window, through)

    def report_panels(self):
        from twin.kinds.tumour.report import PANELS

        return PANELS

    def decision_panel(self, data, out):
        from twin.kinds.tumour.report import decision_panel

        return decision_panel(data, out)

    def verdicts(self):
        from twin.kinds.tumour.report import treatment_verdict

        return (treatment_verdict,)


KIND = Tumour()
