# The two commands: `make demo` and `make test`. Each sets up .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test faults bench bench-agt lint typecheck docs web clean fuzz

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip 2>/dev/null || true
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/interlock demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# the suite on two workers (pytest-xdist), a test file per worker at a time: most tests wait on
# subprocesses, fsync and the network, so two run side by side on two cores; the fault
# campaign runs after, alone, as one session (its matrix is written from all its rows)
test: $(STAMP) lint typecheck docs
	@bash scripts/ensure-postgres.sh
	@bash scripts/ensure-chromium.sh
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --ignore=tests/faults
	$(BIN)/python -m pytest -q tests/faults

# the fault campaign alone (issue 16): the fault matrix and the kill -9 crash trials; rewrites
# FAULTS.md and faults.json (make test runs them too, with everything else)
faults: $(STAMP)
	@bash scripts/ensure-postgres.sh
	$(BIN)/python -m pytest -q tests/faults

# coverage-guided fuzzing (atheris) of every parser of untrusted input, FUZZ_SECONDS per target
# (make test runs each for a few seconds); new inputs grow .fuzz/<target>, findings land in
# .fuzz/findings: fix the bug, then add the input to tests/fuzz/corpus/<target>/
FUZZ_SECONDS ?= 300
fuzz: $(STAMP)
	$(BIN)/python -m tests.fuzz.run --all --seconds $(FUZZ_SECONDS)

# the browser tools: npm packages pinned by web/package-lock.json, bundled by esbuild into
# src/interlock/console/static (committed: pip install needs no Node); tests check it is fresh
web:
	cd web && npm ci --no-audit --no-fund --ignore-scripts && node build.mjs

bench: $(STAMP)
	@bash scripts/ensure-postgres.sh
	@bash scripts/ensure-wrk.sh
	-@$(MAKE) --no-print-directory $(AGT_VENV)/.installed
	$(BIN)/python bench/run.py

# issue 14's comparison: Microsoft's Agent Governance Toolkit 5.0 in an environment of its own
# (it pins cryptography<50 and python-dateutil<3, which would downgrade .venv's); make bench
# installs it (a failed install only makes the bench say AGT is missing) and measures AGT's
# governed action beside Interlock's. This target prints the comparison alone.
AGT_VENV := .venv-agt
$(AGT_VENV)/.installed:
	@test -x $(AGT_VENV)/bin/python || $(PYTHON) -m venv $(AGT_VENV)
	$(AGT_VENV)/bin/python -m pip install --quiet agent-governance-toolkit-core==5.0.0
	@touch $@

bench-agt: $(STAMP) $(AGT_VENV)/.installed
	$(BIN)/python -m interlock.bench.agt

clean:
	rm -rf $(VENV) $(AGT_VENV) web/node_modules .pytest_cache .mypy_cache .ruff_cache .hypothesis .site
