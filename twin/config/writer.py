"""Writing campaign YAML that the reader (:mod:`twin.config.reader`) reads back equal: PyYAML's safe dumper with every
string quoted that YAML 1.2 would read as something else."""

from __future__ import annotations

from typing import Any

import yaml

from twin.config.reader import reads_back


class _Dumper(yaml.SafeDumper):
    """PyYAML's safe dumper, quoting every string that this module would not read back as the same string.

    PyYAML decides plainness by YAML 1.1: it writes the text ``1e3``, ``08`` or ``1.0e5`` plain (1.1 text), which
    YAML 1.2 reads as numbers, and would write a string ``12:00`` plain were it not a 1.1 number.
    """


def _represent_str(dumper: yaml.SafeDumper, value: str):
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=None if reads_back(value) else "'")


_Dumper.add_representer(str, _represent_str)


def dump_yaml(data: Any, **kwargs) -> str:
    """YAML text of plain ``data`` that :func:`read_yaml` reads back equal (``yaml.safe_dump`` arguments apply).

    Use it for every campaign file twin writes (e.g. an experiment's ``experiment.yaml``): ``yaml.safe_dump``
    follows YAML 1.1 and can write text that reads back as a number here.
    """
    kwargs.setdefault("sort_keys", False)
    kwargs.setdefault("allow_unicode", True)
    return yaml.dump(data, Dumper=_Dumper, **kwargs)
