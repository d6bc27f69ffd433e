"""The conformance kit: checks that a model honours the model contract (:mod:`twin.models.base`) the way campaigns
rely on it, one line per check with the number it measured.

From the command line (``twin check-model TYPE [--config FILE] [--ranks 2]``, :mod:`twin.cli_model`) or from a model
author's tests::

    from twin.conformance import check_model, subject_from_file

    def test_my_model_honours_the_contract():
        check_model(subject_from_file("glacier", "campaign.yaml"), ranks=2).assert_ok()

The checks are described in :mod:`twin.conformance.kit`; which model, and from which section, in
:mod:`twin.conformance.subject`. A pytest fixture, ``twin_check_model``, comes with
twin's pytest plugin (:mod:`twin.conformance.pytest_plugin`, loaded through the ``pytest11`` entry point, or with
``pytest_plugins = ["twin.conformance.pytest_plugin"]``).
"""

from twin.conformance.kit import (
                                      CHECKS,
                                      FAIL,
                                      PASS,
                                      SKIP,
                                      CheckResult,
                                      Report,
                                      check_model,
)
from twin.conformance.subject import (
                                      Subject,
                                      example_file,
                                      example_section,
                                      example_subject,
                                      example_types,
                                      subject_from_file,
)

__all__ = ["CHECKS", "PASS", "FAIL", "SKIP", "CheckResult", "Report", "check_model", "Subject", "example_file",
           "example_section", "example_subject", "example_types", "subject_from_file"]
