"""A pytest fixture for model authors, ``twin_check_model``. Installing twin registers this module as a pytest plugin
(entry point group ``pytest11``, named by the module so that it is loaded once), and
``pytest_plugins = ["twin.conformance.pytest_plugin"]`` in a conftest.py asks for it explicitly (what the packages of
``twin new-model`` do, so that they work with a twin installed before the entry point existed). Then::

    def test_contract(twin_check_model):
        twin_check_model("glacier", "campaign.yaml")          # fails the test with the report's lines

``twin_check_model(type_name, config, component=None, **options)`` runs :func:`twin.conformance.check_model` on the
model of ``type_name`` in the campaign file ``config`` and returns the report when every check passed.
"""

from __future__ import annotations

import pytest


@pytest.fixture
def twin_check_model():
    from twin.conformance import check_model, subject_from_file

    def run(type_name: str, config, component: str | None = None, **options):
        report = check_model(subject_from_file(type_name, config, component), **options)
        report.assert_ok()
        return report

    return run
