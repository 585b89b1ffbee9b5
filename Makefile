# The commands: `make run` (the tour on the fake driver), `make serve` (the reference service on
# fake hosts, API and dashboard) and `make test` (everything).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
export PIP_NO_INPUT := 1

.PHONY: run serve test system-deps lint typecheck unit coverage-html floors docs bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The stamp files re-run an install only when a pyproject changes.
$(VENV)/.run-installed: $(BIN)/python pyproject.toml plugins/fake/pyproject.toml
	$(PIP) install -e '.[keeper]' -e plugins/fake
	touch $@

# The libvirt plugin's C extension is built by its install: its sources count too.
$(VENV)/.test-installed: $(BIN)/python pyproject.toml $(wildcard plugins/*/pyproject.toml) \
		$(wildcard plugins/*/setup.py plugins/*/powerdrivers_*/*.c) \
		docs/examples/powerdrivers-procs/pyproject.toml
	$(PIP) install -e '.[test,docs,keeper,service,postgresql]' -e 'plugins/fake[test]' -e 'plugins/libvirt[test]' -e 'plugins/xen[test]' \
		-e docs/examples/powerdrivers-procs
	touch $@ $(VENV)/.run-installed

run: $(VENV)/.run-installed
	PATH="$(CURDIR)/$(BIN):$$PATH" bash docs/tour.sh

$(VENV)/.serve-installed: $(BIN)/python pyproject.toml plugins/fake/pyproject.toml
	$(PIP) install -e '.[service]' -e plugins/fake
	touch $@

# The reference service on 3 fake hosts and an SQLite file, all in .cache/serve (made once, with
# an operator's and a reader's token in files there): the API and dashboard at the printed URL.
serve: $(VENV)/.serve-installed
	$(BIN)/python -c 'from powerdrivers.service._serve import prepare_demo; prepare_demo(".cache/serve")'
	$(BIN)/powerdrivers serve --config .cache/serve/service.toml

system-deps:
	bash .ci/system-deps.sh

lint: $(VENV)/.test-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# One run per test folder: each has its own conftest module.
typecheck: $(VENV)/.test-installed
	$(BIN)/mypy powerdrivers $(dir $(wildcard plugins/*/powerdrivers_*/__init__.py)) docs/_ext \
		docs/examples/powerdrivers-procs/powerdrivers_procs
	$(BIN)/mypy tests --exclude '^tests/(keeper|service)/'
	for folder in tests/keeper tests/service plugins/*/tests docs/examples/*/tests; do $(BIN)/mypy $$folder || exit 1; done

# Coverage of everything the tests run ([tool.coverage.*] in pyproject.toml says how), reported
# file by file, then each distribution (its folder) beside its floor: the percentage it reaches
# here with every test run. Under CI=true, where no real-hypervisor test may skip, a total under
# its floor fails; elsewhere (no root, no libvirtd) skipped tests lower it and it is only shown.
COVERAGE_FLOORS := powerdrivers:97 powerdrivers/service:90 plugins/fake:95 plugins/libvirt:90 plugins/xen:92 \
	docs/examples/powerdrivers-procs:92

unit: $(VENV)/.test-installed
	$(BIN)/coverage erase
	$(BIN)/coverage run -m pytest
	$(BIN)/coverage combine --quiet
	$(BIN)/coverage report
	@status=0; for floor in $(COVERAGE_FLOORS); do \
		folder=$${floor%:*}; minimum=$${floor##*:}; \
		omit=; [ "$$folder" = powerdrivers ] && omit="powerdrivers/service/*"; \
		total=$$($(BIN)/coverage report --include="$$folder/*" --omit="$$omit" --format=total) || exit 1; \
		if [ "$$total" -ge "$$minimum" ]; then verdict=ok; \
		elif [ "$$CI" = true ]; then verdict="UNDER ITS FLOOR"; status=1; \
		else verdict="under its floor (enforced under CI=true)"; fi; \
		printf 'coverage %-34s %3s%%  floor %3s%%  %s\n' "$$folder" "$$total" "$$minimum" "$$verdict"; \
	done; exit $$status

# The same data as an HTML report in htmlcov/ (open htmlcov/index.html), after `make unit`.
coverage-html: $(VENV)/.test-installed
	$(BIN)/coverage html

# The lowest declared version of every dependency, in a venv of its own, running the fast tests:
# a floor in a pyproject is a promise that this version works.
floors: $(BIN)/python
	$(BIN)/python .ci/floors.py

docs: $(VENV)/.test-installed
	$(BIN)/sphinx-build -q -W --keep-going -b html docs docs/_build/html

test: system-deps lint typecheck unit floors docs

# The benchmark suite (tests/benchmarks, never part of `make test`): a few minutes; the
# results table goes to docs/performance-results.inc, shown by docs/performance.rst.
bench: $(VENV)/.test-installed
	bash .ci/system-deps.sh
	$(BIN)/python tests/benchmarks/run.py

clean:
	rm -rf $(VENV) .venv-floors .cache docs/_build .coverage .mypy_cache .pytest_cache .ruff_cache
