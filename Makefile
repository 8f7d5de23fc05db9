# netoffload developer entry points. `make demo` and `make test` set up
# everything they need on a fresh machine (see tools/bootstrap).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# The suite runs in TEST_JOBS processes (pytest-xdist), one test file per
# process at a time, so a module's fixtures are built once and its tests keep
# their order. Most tests wait on processes, namespaces and simulated
# latency rather than on the CPU. Tests marked `serial` measure throughput or
# timing and run afterwards, one at a time. Exit status 5 means no test was
# selected, which a narrowed PYTEST_ARGS can cause in either phase.
TEST_JOBS ?= 3
PYTEST_PHASES = \
	$(PY) -m pytest -n $(TEST_JOBS) --dist loadfile -m "$(1)not serial" $(PYTEST_ARGS) || [ $$? -eq 5 ]; \
	$(PY) -m pytest -m "$(1)serial" $(PYTEST_ARGS) || [ $$? -eq 5 ]

.PHONY: all bootstrap test test-fast lint demo box rpm pack bench clean

all: test

bootstrap:
	PYTHON=$(PYTHON) tools/bootstrap

test: bootstrap
	set -e; $(call PYTEST_PHASES,)

# The static checks alone: ruff, basedpyright at Python 3.6, vermin and the
# dom0 import rules (settings in pyproject.toml). `make test` runs them too.
lint: bootstrap
	$(PY) -m pytest -q -p no:cacheprovider tests/test_static_checks.py tests/test_dom0_compat.py

# Tests that need neither root nor network namespaces.
test-fast: bootstrap
	set -e; $(call PYTEST_PHASES,not root and )

demo: bootstrap
	$(PY) -m sim.demo $(DEMO_ARGS)

# The pool in a box with a shell to play in (docs/demo.md). Whatever ends
# the shell (exit, Ctrl-D, a kill of the box), the cleanup after it removes
# every namespace, process and file the box made.
box: bootstrap
	@$(PY) -m sim.box $(BOX_ARGS); rc=$$?; $(PY) -m sim.box --cleanup; exit $$rc

rpm: bootstrap
	$(PY) pack/build.py rpm

pack: bootstrap
	$(PY) pack/build.py pack

# Every benchmark runs even when one misses its target; the exit status
# says whether any did.
bench: bootstrap
	rc=0; for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || rc=1; done; exit $$rc

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache
