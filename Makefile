# twin: set-up, tests, demo and benchmarks. Every target installs what it needs first (idempotent, fast the second
# time). On Debian/Ubuntu as root the system stack (PETSc, MPI, parallel HDF5, netCDF) comes from the distribution;
# elsewhere point PYTHON at an interpreter that already has petsc4py, mpi4py and h5py (see README, "On a cluster").

VENV      ?= .venv
PY        := $(VENV)/bin/python
STAMP     := $(VENV)/.twin-installed
# The example plugin package (a Lorenz-63 kind found through entry points), installed beside twin for its tests
PLUGIN    := examples/lorenz63-plugin
NP        ?= 2
# A rank stuck in a collective call cannot be interrupted from Python: bound the whole MPI test run instead.
MPI_TIMEOUT ?= 900
MPIEXEC   ?= mpiexec
# The serial suite runs in this many pytest-xdist workers, one test file per worker at a time (module fixtures run
# once); most of its time is campaigns in subprocesses and mpiexec jobs, which two workers overlap on 2 cores.
TEST_JOBS ?= 2
SERIAL    := -n $(TEST_JOBS) --dist loadfile
DEMO      ?= oncology
DEB_PKGS  := python3-petsc4py python3-mpi4py python3-h5py-mpi python3-netcdf4 python3-venv openmpi-bin netcdf-bin
# Open MPI refuses root without these; harmless for other users and for MPICH.
export OMPI_ALLOW_RUN_AS_ROOT := 1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM := 1
export OMPI_MCA_rmaps_base_oversubscribe := 1

.PHONY: setup system browser test test-serial test-mpi demo bench clean

setup: $(STAMP)

# System packages: only when something is missing. Fails with what to do when not possible here.
system:
	@missing=""; for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
	  echo "twin setup: this is not a Debian/Ubuntu machine (no apt-get). Install PETSc+petsc4py, an MPI with mpi4py," \
	       "h5py and netCDF4 yourself, then run: make setup PYTHON=/path/to/that/python (README: 'On a cluster')." >&2; exit 2; fi; \
	if [ "$$(id -u)" != 0 ]; then \
	  echo "twin setup: missing system packages:$$missing. Run as root: apt-get install -y$$missing" >&2; exit 2; fi; \
	echo "twin setup: installing$$missing"; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null

$(STAMP): pyproject.toml constraints.txt $(PLUGIN)/pyproject.toml
	@if [ -z "$(PYTHON)" ]; then $(MAKE) --no-print-directory system; fi
	@set -e; base="$(PYTHON)"; [ -n "$$base" ] || base=/usr/bin/python3; \
	if [ ! -x $(PY) ]; then echo "twin setup: creating $(VENV) from $$base"; $$base -m venv --system-site-packages $(VENV); fi; \
	site=$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	petsc=$$(ls -d /usr/lib/petscdir/petsc*/*-real/lib/python3/dist-packages 2>/dev/null | sort -V | tail -n 1); \
	if [ -n "$$petsc" ]; then echo "$$petsc" > "$$site/twin-debian-petsc.pth"; fi; \
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]' 2>&1 | grep -v '^WARNING: Location' || true; \
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e $(PLUGIN) 2>&1 | grep -v '^WARNING: Location' || true; \
	$(PY) -c 'import petsc4py, mpi4py, h5py, netCDF4, xarray, parsl, pydantic, twin, twin_lorenz63' || \
	  { echo "twin setup: the environment in $(VENV) cannot import the stack (see the error above)" >&2; exit 2; }
	@# compliance-checker (CF tests) wants a newer netCDF4 than Debian's: it lives in its own environment.
	@[ -x $(VENV)/cf-tools/bin/python ] || { $(or $(PYTHON),/usr/bin/python3) -m venv $(VENV)/cf-tools && \
	  $(VENV)/cf-tools/bin/pip install -q --disable-pip-version-check 'compliance-checker==6.1.0' 2>&1 | \
	  grep -v '^WARNING: Location' || true; }
	@$(VENV)/cf-tools/bin/python -c 'import compliance_checker' || \
	  { echo "twin setup: could not install compliance-checker into $(VENV)/cf-tools" >&2; exit 2; }
	@touch $(STAMP)

# Debian's Chromium for the tests that render the reports as a reader sees them (tests/integration/browser.py);
# without root or apt they skip that check (CI fails instead).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "twin setup: installing chromium (report tests)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	  else echo "twin setup: no chromium: the report tests will not check the reports in a browser (apt-get install chromium)"; fi; }

test: setup browser
	timeout -k 20 $(MPI_TIMEOUT) $(MPIEXEC) -n $(NP) $(PY) -m pytest -q -p no:cacheprovider --color=no tests/mpi
	$(PY) -m pytest -q -p no:cacheprovider $(SERIAL) tests/unit tests/verification tests/integration $(PLUGIN)/tests

test-serial: setup browser
	$(PY) -m pytest -q -p no:cacheprovider $(SERIAL) tests/unit tests/verification tests/integration $(PLUGIN)/tests

test-mpi: setup
	timeout -k 20 $(MPI_TIMEOUT) $(MPIEXEC) -n $(NP) $(PY) -m pytest -q -p no:cacheprovider --color=no tests/mpi

# The oncology twin by default; `make demo DEMO=atmosphere` (or structure, quickstart, ...) runs configs/$(DEMO).yaml.
# A second run resumes the run directory (nothing left to do: it only writes the report again).
demo: setup
	$(MPIEXEC) -n $(NP) $(VENV)/bin/twin run configs/$(DEMO).yaml -o runs/$(DEMO)
	$(VENV)/bin/twin report runs/$(DEMO)

# DAPPER (the reference Python DA testbed, compared side by side in bench_da) would downgrade packages twin uses:
# it gets an environment of its own.
$(VENV)/dapper/bin/python:
	$(or $(PYTHON),/usr/bin/python3) -m venv $(VENV)/dapper
	$(VENV)/dapper/bin/pip install -q --disable-pip-version-check -c constraints.txt dapper

bench: setup $(VENV)/dapper/bin/python
	TWIN_DAPPER_PYTHON=$(abspath $(VENV))/dapper/bin/python $(PY) -m benchmarks $(BENCH)

clean:
	rm -rf $(VENV) runs *.egg-info
