"""Experiments: one campaign expanded by a matrix of settings into several complete, validated campaigns.

A matrix maps dotted key paths of the campaign file to lists of values, e.g.
``{"assimilation.inflation": [1.0, 1.05], "campaign.seed": [1, 2]}``; the experiments are the Cartesian product of
the lists in the order given (the last key varies fastest). Each expanded configuration is validated exactly like a
campaign file (:func:`twin.config.loader.validate_data`), so a misspelled path or a bad value is reported with the
experiment's name and the key.

Names are deterministic and readable: the last component of each varied key and its value, joined by ``_``
(``inflation-1.05_seed-2``); where two keys share a last component the whole path is used. A value that is a whole
section (a mapping) is named by its ``method``, ``type``, ``kind`` or ``name`` entry when it has one
(``assimilation-esmda``), a list of sections by theirs in turn (``observations-file-points``). Characters outside
``[A-Za-z0-9.-]`` become ``-``. A campaign without a matrix is one experiment named after the campaign.

Twin-experiment truths: with ``experiments.truth.draw`` the listed parameters of the nature run are drawn from their
priors (:func:`draw_truth`) from the stream ``numpy.random.default_rng([campaign.seed, TRUTH_PARAMETERS])``
(:func:`twin.core.streams.truth_parameters_rng`), which depends on nothing else: a matrix over ``campaign.seed`` is a
cohort of synthetic patients, and the experiments of one seed that differ in the method calibrate the same patient.
``experiments.truth`` is kept in every ``experiment.yaml`` (the rest of the ``experiments`` section describes the
whole campaign and is dropped).

This module imports no MPI and no PETSc: the workflow process uses it.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence


from twin.campaign import layout
from twin.core.errors import ConfigError, ConfigProblem, OutputError, TwinError
from twin.core.log import get_logger

log = get_logger("twin.campaign")

_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")

#: Entries that name a section given whole as a matrix value.
_SECTION_LABELS = ("method", "type", "kind", "name")


@dataclass
class Experiment:
    """One expanded experiment.

    Attributes
    ----------
    name : str
        Directory name of the experiment (unique within the campaign).
    overrides : dict
        The matrix values of this experiment, ``{dotted.path: value}``.
    data : dict
        The complete campaign as plain data (what ``experiment.yaml`` holds).
    config : Any
        The validated, typed campaign.
    """

    name: str
    overrides: dict[str, Any]
    data: dict[str, Any]
    config: Any = field(repr=False)

    @property
    def text(self) -> str:
        """The experiment as YAML text (written to ``<experiment>/experiment.yaml``)."""
        from twin.config.writer import dump_yaml

        # YAML 1.2 (the campaign reader's rules): yaml.safe_dump's YAML 1.1 would write "1e3" or "08" unquoted
        return dump_yaml(self.data, default_flow_style=None, width=120)


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format(value, "g")
    if isinstance(value, dict):
        for key in _SECTION_LABELS:
            if isinstance(value.get(key), (str, int)) and not isinstance(value.get(key), bool):
                return _format(value[key])
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return "-".join(_format(v) for v in value)  # a list of sections (networks): their labels
    return _UNSAFE.sub("-", str(value)).strip("-") or "x"


def experiment_names(matrix: Mapping[str, Sequence[Any]], combos: Sequence[tuple]) -> list[str]:
    """Deterministic, unique directory names for the value combinations ``combos`` of ``matrix``."""
    keys = list(matrix)
    last = [k.split(".")[-1] for k in keys]
    labels = [k.replace(".", "-") if last.count(s) > 1 else s for k, s in zip(keys, last)]
    names = []
    for combo in combos:
        name = "_".join(f"{_UNSAFE.sub('-', lab)}-{_format(v)}" for lab, v in zip(labels, combo))
        names.append(name[:120])
    if len(set(names)) != len(names):
        width = len(str(len(names) - 1))
        names = [f"x{i:0{width}d}_{n}"[:120] for i, n in enumerate(names)]
    return names


def set_path(data: dict, path: str, value: Any) -> None:
    """Set ``data[a][b][...] = value`` for ``path = "a.b..."``, creating missing mappings; integers index lists.

    Raises
    ------
    KeyError
        With a message naming the part of the path that does not exist or is not a mapping/list.
    """
    keys = path.split(".")
    node: Any = data
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        where = ".".join(keys[:i + 1])
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise KeyError(f"'{where}': index {key} is not in a list of {len(node)} entries")
            idx: Any = int(key)
        elif isinstance(node, dict):
            idx = key
            if not last and idx not in node:
                node[idx] = {}
        else:
            raise KeyError(f"'{'.'.join(keys[:i])}' is a value ({node!r}), not a section")
        if last:
            node[idx] = copy.deepcopy(value)
        else:
            node = node[idx]


def base_data(config: Any) -> dict[str, Any]:
    """The campaign as plain data without its ``experiments`` section (the keys the file set, not defaults)."""
    data = config.model_dump(mode="json", exclude_unset=True)
    section = data.pop("experiments", None) or {}
    truth = dict(section.get("truth") or {})
    if not (truth.get("draw") or truth.get("estimable")) and int(section.get("replicates", 1)) > 1:
        truth["estimable"] = True  # replicates are independent truths: every estimable parameter drawn
    if truth:
        # how the truth of a twin experiment is made belongs to each experiment (its nature run reads it)
        data["experiments"] = {"truth": truth}
    return data


def truth_spec(config):
    """``experiments.truth`` of a campaign or experiment (``None`` when absent)."""
    section = config.experiments if "experiments" in type(config).model_fields else None
    return getattr(section, "truth", None) if section is not None else None


def draw_truth(config, model) -> dict[str, Any]:
    """Draw the true values of ``experiments.truth.draw`` from their priors and give them to ``model``.

    Deterministic in ``campaign.seed`` alone (see the module docstring) and identical on every rank; the draws are
    made in the order listed. Returns ``{name: value}`` (floats, or whole fields in natural C order); empty when the
    campaign draws nothing. Collective over the model's communicator (field parameters are scattered).

    Raises
    ------
    ConfigError
        For a name that is not a parameter of the model or has no prior.
    """
    from twin.campaign.context import sample_parameter
    from twin.core.streams import truth_parameters_rng

    spec = truth_spec(config)
    if spec is None or not (spec.draw or spec.estimable):
        return {}
    names = list(spec.draw) or [p.name for p in model.estimable() if p.prior is not None]
    gen = truth_parameters_rng(config.campaign.seed)
    out: dict[str, Any] = {}
    for name in names:
        p = model.parameters.get(name)
        if p is None or p.prior is None:
            what = "is not a parameter" if p is None else "has no prior"
            raise ConfigError(f"experiments.truth.draw: {name!r} {what} of model {model.name!r}; parameters with "
                              f"priors: {sorted(k for k, v in model.parameters.items() if v.prior is not None)}")
        out[name] = sample_parameter(model, p, gen)
    from twin.campaign.context import set_member_parameters

    set_member_parameters(model, out)
    return out


def expand(config: Any, matrix: Mapping[str, Sequence[Any]] | None, *,
           filename: str = "<campaign>") -> list[Experiment]:
    """Expand a typed campaign by ``matrix`` into validated experiments.

    Parameters
    ----------
    config : Campaign
        The validated campaign (``LoadedCampaign.config``).
    matrix : mapping of str to list, optional
        ``{dotted.path: [values]}`` (``ExperimentsConfig.matrix``); empty or ``None`` gives one experiment named
        after the campaign.
    filename : str
        Used in error messages.

    Returns
    -------
    list of Experiment

    Raises
    ------
    ConfigError
        Listing every problem of every experiment (bad paths, invalid values), each prefixed with the experiment.
    """
    from twin.config.loader import validate_data

    base = base_data(config)
    matrix = dict(matrix or {})
    if not matrix:
        cfg = validate_data(copy.deepcopy(base), filename)
        return [Experiment(config.campaign.name, {}, base, cfg)]
    keys = list(matrix)
    combos = list(itertools.product(*(matrix[k] for k in keys)))
    names = experiment_names(matrix, combos)
    out, problems = [], []
    for name, combo in zip(names, combos):
        data = copy.deepcopy(base)
        overrides = dict(zip(keys, combo))
        bad = False
        for key, value in overrides.items():
            try:
                set_path(data, key, value)
            except KeyError as exc:
                problems.append(ConfigProblem(filename, None, None, f"experiments.matrix.{key}",
                                              f"experiment {name}: {exc.args[0]}"))
                bad = True
        if bad:
            continue
        try:
            cfg = validate_data(data, f"{filename} (experiment {name})")
        except ConfigError as exc:
            problems += exc.problems
            continue
        out.append(Experiment(name, overrides, data, cfg))
    if problems:
        raise ConfigError(problems)
    return out


def all_experiments(loaded) -> list[Experiment]:
    """Every experiment of the campaign ``loaded`` (its whole matrix, the replicates included), validated."""
    cfg = loaded.config
    return expand(cfg, experiments_section(cfg).full_matrix(cfg.campaign.seed), filename=str(loaded.path))


def check_observation_files(loaded, experiments: Sequence[Experiment] | None = None) -> None:
    """Read every observation file of every experiment (:func:`all_experiments` unless given) before anything runs
    (:mod:`twin.observations.preflight`); :class:`ConfigError` with one line per file that cannot be read, at its
    key of the campaign file (led by the experiment's name when the experiments differ). A file several
    experiments share is read, and reported, once."""
    from twin.observations.preflight import file_problems

    experiments = all_experiments(loaded) if experiments is None else experiments
    seen: dict = {}
    problems, said = [], set()
    for exp in experiments:
        for path, message in file_problems(exp.config, seen):
            if message in said:
                continue
            said.add(message)
            lead = f"experiment {exp.name}: " if len(experiments) > 1 else ""
            # the key of the campaign file that named the file: its own, or the matrix value that replaced it
            named_here = _value_at(loaded.config, path) == _value_at(exp.config, path)
            problems.append(loaded.problem(path if named_here else ("experiments", "matrix"), lead + message))
    if problems:
        raise ConfigError(problems)


def _value_at(config: Any, path: tuple) -> Any:
    """The value at the key ``path`` of a typed campaign (``None`` where it has none)."""
    node = config
    for key in path:
        try:
            node = node[key] if isinstance(key, int) else getattr(node, key)
        except (AttributeError, IndexError, TypeError):
            return None
    return node


def experiments_section(config):
    """The campaign's ``experiments`` section, or the defaults when the schema or the file has none."""
    from twin.config.experiments import ExperimentsConfig

    section = config.experiments if "experiments" in type(config).model_fields else None
    return section if section is not None else ExperimentsConfig()


def prepare_experiments(loaded, run_dir, experiments=None, comm=None) -> list[Path]:
    """Expand the campaign, create ``<run_dir>/experiments/<name>/experiment.yaml`` (rank 0) and return the
    experiment directories. An existing directory must hold the same experiment (resume), else ConfigError; so is an
    observation file that cannot be read (:func:`check_observation_files`), before anything is made."""
    from twin.campaign.rundir import record_owner
    from twin.io.atomic import write_text
    from twin.io.provenance import prepare_run_directory

    experiments = experiments or experiments_section(loaded.config)
    exps = expand(loaded.config, experiments.full_matrix(loaded.config.campaign.seed), filename=str(loaded.path))
    check_observation_files(loaded, exps)  # before any experiment directory is made
    sensitive = loaded.config.campaign.sensitive
    run_dir = Path(run_dir)
    prepare_run_directory(run_dir, sensitive=sensitive, comm=comm)
    rank = comm.Get_rank() if comm is not None else 0
    problem = None
    if rank == 0:
        record_owner(run_dir, loaded)
        # every experiment checked before anything is written: a refused run changes nothing (a probe: matrix.json
        # was rewritten first, and the finished run then listed an experiment that never was)
        problem = _refusal(run_dir, loaded, exps)
        if problem is None:
            try:
                for e in exps:
                    d = layout.experiment_dir(run_dir, e.name)
                    prepare_run_directory(d, sensitive=sensitive)
                    f = layout.config_file(d)
                    if not f.exists():
                        write_text(f, e.text, private=sensitive)
                    elif (held := f.read_text()) != e.text:  # only how it runs changed (_refusal)
                        write_text(f, e.text, private=sensitive)
                        log.info("experiment %s: how it runs changed since it was set up%s; it resumes with the new "
                                 "values", e.name, _first_difference(held, e.text, skip=()))
            except OutputError as exc:
                problem = str(exc)
            else:
                _record_matrix(run_dir, exps, sensitive)
    if comm is not None and comm.Get_size() > 1:
        problem = comm.bcast(problem, root=0)
    if problem:
        raise ConfigError(problem)
    return [layout.experiment_dir(run_dir, e.name) for e in exps]


#: Keys of an experiment that say how and where it runs, or describe it, not what it computes: running the campaign
#: again may change them and resume (a longer Slurm walltime after a batch job's time ran out, more workers, another
#: launcher, checkpoints more or less often: the outputs are bitwise the same); ``experiment.yaml`` then takes the new
#: ones.
HOW_IT_RUNS = (("resources",), ("campaign", "description"), ("outputs", "checkpoint_every"),
               ("outputs", "checkpoint_seconds"))


def _what_it_computes(text: str):
    """The experiment of ``text`` (twin's own YAML, read safely) without :data:`HOW_IT_RUNS`, or ``None`` when it
    cannot be read."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    if not isinstance(data, dict):
        return None
    for *parents, key in HOW_IT_RUNS:
        node = data
        for k in parents:
            node = node.get(k) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(key, None)
        if len(parents) == 1 and node == {}:  # ``outputs: {checkpoint_every: 5}`` without the key: no section
            data.pop(parents[0], None)
    return data


def _same_computation(held: str, now: str) -> bool:
    """Whether two experiment files differ at most in :data:`HOW_IT_RUNS`."""
    a = _what_it_computes(held)
    return a is not None and a == _what_it_computes(now)


def _refusal(run_dir: Path, loaded, exps) -> str | None:
    """Why the experiments ``exps`` cannot be set up in ``run_dir`` (``None`` when they can), found without writing
    anything: experiments/, an experiment's folder or its checkpoint/ a link out of the run directory, an existing
    experiment that is another one than the campaign expands to now, an observation file that changed under a
    finished cycle (:func:`changed_observation_file`)."""
    from twin.io.provenance import refuse_link_out

    hashes: dict = {}  # the SHA-256 of each observation file, computed once for every experiment naming it
    for e in exps:
        d = layout.experiment_dir(run_dir, e.name)
        try:  # experiments/, an experiment's folder and its checkpoint/ as links out: refused, existing ones too
            refuse_link_out(d.parent, run_dir)
            refuse_link_out(d, d.parent)
            refuse_link_out(d / "checkpoint", d)
        except OutputError as exc:
            return str(exc)
        f = layout.config_file(d)
        if f.exists():
            if (held := f.read_text()) != e.text and not _same_computation(held, e.text):
                return (f"{f} holds a different experiment than {loaded.path} expands to"
                        f"{_first_difference(held, e.text)}: continue a run with the campaign file that started it "
                        "(only resources, campaign.description and outputs.checkpoint_every / checkpoint_seconds may "
                        "change), or use another run directory")
            problem = changed_observation_file(d, e.config, e.name, hashes)
            if problem:
                return problem
    return None


def _record_matrix(run_dir: Path, exps, sensitive: bool) -> None:
    """``matrix.json``: which matrix values each experiment of the run directory has (the report groups experiments
    that differ only in their method); this run's experiments, and those an earlier run with another matrix set up
    here that are still there."""
    from twin.io.atomic import write_text

    path = run_dir / "matrix.json"
    try:
        earlier = json.loads(path.read_text())
        earlier = earlier if isinstance(earlier, dict) else {}
    except (OSError, ValueError):
        earlier = {}
    matrix = {name: values for name, values in earlier.items()
              if isinstance(name, str) and layout.config_file(layout.experiment_dir(run_dir, name)).is_file()}
    matrix.update({e.name: {k: _format(v) for k, v in e.overrides.items()} for e in exps})
    write_text(path, json.dumps(matrix, indent=1, sort_keys=True) + "\n", private=sensitive)


def _first_difference(held: str, now: str, skip=HOW_IT_RUNS) -> str:
    """``" (decision.horizon: 1 then, 2 now)"``: the first key whose value differs between two experiment files
    (twin's own YAML, read safely), those below ``skip`` aside, or ``""`` when they differ in form only or cannot be
    read."""
    import yaml

    def leaves(node, path=()):
        if isinstance(node, dict):
            for k, v in node.items():
                yield from leaves(v, (*path, str(k)))
        elif isinstance(node, list) and node and any(isinstance(x, (dict, list)) for x in node):
            for i, v in enumerate(node):
                yield from leaves(v, (*path, str(i)))
        else:
            yield ".".join(path), node

    def shown(tree, key):
        text = str(tree[key]) if key in tree else "absent"
        return text if len(text) <= 60 else text[:57] + "..."

    try:
        a, b = dict(leaves(yaml.safe_load(held))), dict(leaves(yaml.safe_load(now)))
    except yaml.YAMLError:
        return ""
    skipped = tuple(".".join(k) for k in skip)
    for key in [*a, *(k for k in b if k not in a)]:
        if any(key == k or key.startswith(k + ".") for k in skipped):
            continue
        if key not in a or key not in b or a[key] != b[key]:
            return f" ({key}: {shown(a, key)} then, {shown(b, key)} now)"
    return ""


def changed_observation_files(exp_dir, config, hashes: dict | None = None) -> list[tuple[str, str]]:
    """``(file, network)`` of every observation file of the experiment in ``exp_dir`` (``config``: its campaign, the
    files its networks name now) whose content is not what the experiment read: its SHA-256 differs from the one its
    ``observations.h5`` records (``meta["files"]``, :func:`twin.observations.networks.file_records`), or it cannot be
    read. The records are matched to the files by network and position (a network's ``file``, then its
    ``deliveries`` in order), not by path, so a run directory that was moved is checked too; a file not recorded yet
    (a delivery whose cycles have not run) and an experiment without ``observations.h5`` (not started, or a twin
    experiment) have nothing to compare. ``hashes`` keeps the SHA-256 of each file by its path, size and modification
    time across calls (the experiments of a matrix share files). MPI-free (``observations.h5`` is read with h5py
    alone)."""
    import os

    from twin.campaign.deliveries import companions_of, delivery_sha256
    from twin.campaign.status import observation_file_records
    from twin.observations.networks import network_names, reads_files

    hashes = {} if hashes is None else hashes
    path = layout.observations_file(exp_dir)
    if not path.is_file():
        return []
    records: dict[str, list[str]] = {}
    for r in observation_file_records(path):
        records.setdefault(str(r.get("network")), []).append(str(r.get("sha256")))
    if not records:
        return []
    networks = list(getattr(config.assimilation, "observations", None) or [])
    out = []
    for name, spec in zip(network_names(networks), networks):
        if not reads_files(spec):
            continue
        for file, recorded in zip(spec.files(), records.get(name, [])):
            try:
                st = os.stat(file)
                key = (str(file), st.st_size, st.st_mtime_ns)
                if key not in hashes:
                    hashes[key] = delivery_sha256(file, companions_of(spec, file))
                now = hashes[key]
            except (OSError, TwinError):
                now = None
            if now != recorded:
                out.append((str(file), name))
    return out


def changed_observation_file(exp_dir, config, name: str, hashes: dict | None = None) -> str | None:
    """The one-line refusal of a resume for an experiment one of whose observation files changed after it was read
    (:func:`changed_observation_files`), or ``None``. As a changed campaign (``experiment.yaml``), a changed file
    is not taken in silently: the analyses made from the old content would stay, the later ones use the new."""
    changed = changed_observation_files(exp_dir, config, hashes)
    if not changed:
        return None
    file, network = changed[0]
    more = f" (and {len(changed) - 1} more file(s))" if len(changed) > 1 else ""
    return (f"observation file {file} (network {network}) has changed since experiment {name} read it{more}: its "
            f"SHA-256 is not the one {layout.observations_file(exp_dir)} records; restore the file as it was to "
            "continue this run, or run the campaign with the new file in another run directory (new observations "
            "go in new files, delivered with twin assimilate)")
