"""The tumour growth model (reaction-diffusion with radiotherapy and chemotherapy) on PETSc; see :mod:`.model`."""

from twin.models.tumour.adjoint import GRADIENT_PARAMETERS
from twin.models.tumour.model import TumourModel
from twin.models.tumour.phantom import Tissue, box_tissue, brain_phantom
from twin.models.tumour.treatment import DrugDose, Fraction, TreatmentPlan, survival_fraction

__all__ = ["TumourModel", "GRADIENT_PARAMETERS", "Tissue", "box_tissue", "brain_phantom", "TreatmentPlan",
           "Fraction", "DrugDose", "survival_fraction"]
