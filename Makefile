# tap-cdr developer tasks. Every target builds what it needs on a fresh machine.
PYTHON ?= python3
VENV := .venv
# Meltano and singer-tools pin libraries that clash with singer-sdk's, so each
# gets a virtualenv of its own.
MELTANO_VENV := .venv-meltano
TOOLS_VENV := .venv-tools
# The warehouse emulators, each in a virtualenv of its own: their pins conflict
# (fakesnow needs snowflake-connector-python below 5, bqemulator a given duckdb).
FAKESNOW_VENV := .venv-fakesnow
BQEMULATOR_VENV := .venv-bqemulator

.PHONY: demo test dist bench bench-kpis lint format sandbox clean

demo: $(VENV)/.installed $(MELTANO_VENV)/.installed
	bash scripts/demo.sh

test: $(VENV)/.installed $(TOOLS_VENV)/.installed $(MELTANO_VENV)/.installed \
		$(FAKESNOW_VENV)/.installed $(BQEMULATOR_VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	SINGER_CHECK_TAP=$(TOOLS_VENV)/bin/singer-check-tap $(VENV)/bin/pytest

# dist/: the wheel, the sdist, and tap-cdr.yml, the Meltano plugin definition that
# installs that wheel (`make dist PIP_URL=git+https://...` for another pip_url). Older
# wheels stay: a Meltano project's pip_url may still name one.
dist: $(VENV)/.installed
	$(VENV)/bin/python -m build --outdir dist .
	$(VENV)/bin/python scripts/meltano_plugins.py --dist dist $(if $(PIP_URL),--pip-url '$(PIP_URL)')

# Speed and memory figures (never part of `make test`): writes benchmarks/RESULTS.md.
bench: $(VENV)/.installed
	$(VENV)/bin/pip install --quiet 'orjson>=3.10'
	$(VENV)/bin/python benchmarks/bench.py --pairs 5

# The KPI models' incremental build on 1,000,000 calls (DuckDB): writes its section of
# benchmarks/RESULTS.md.
bench-kpis: $(MELTANO_VENV)/.installed
	$(MELTANO_VENV)/bin/meltano install transformer dbt-duckdb
	.meltano/transformers/dbt-duckdb/venv/bin/python benchmarks/kpis.py --rounds 3

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(VENV)/.installed
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

sandbox: $(VENV)/.installed
	$(VENV)/bin/tap-cdr-sandbox --port 8765

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[intake]' --group test --group typing
	touch $@

$(MELTANO_VENV)/.installed:
	$(PYTHON) -m venv $(MELTANO_VENV)
	$(MELTANO_VENV)/bin/pip install --quiet 'meltano>=4,<5'
	touch $@

# singer-check-tap, and pipx for the README's install commands (tests/test_install.py).
$(TOOLS_VENV)/.installed: Makefile
	$(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/pip install --quiet 'singer-tools==0.4.1' 'pipx>=1.7'
	touch $@

$(FAKESNOW_VENV)/.installed:
	$(PYTHON) -m venv $(FAKESNOW_VENV)
	$(FAKESNOW_VENV)/bin/pip install --quiet 'fakesnow[server]==0.12.1' 'snowflake-connector-python<5'
	touch $@

$(BQEMULATOR_VENV)/.installed:
	$(PYTHON) -m venv $(BQEMULATOR_VENV)
	$(BQEMULATOR_VENV)/bin/pip install --quiet 'bqemulator==1.4.0' 'duckdb==1.5.5' \
		'duckdb-extension-spatial==1.5.5' numpy
	# bqemulator loads DuckDB's spatial extension, which DuckDB would download:
	# install it from its package instead (CI has no internet).
	$(BQEMULATOR_VENV)/bin/python scripts/install_duckdb_spatial.py
	touch $@

clean:
	rm -rf $(VENV) $(MELTANO_VENV) $(TOOLS_VENV) $(FAKESNOW_VENV) $(BQEMULATOR_VENV) .meltano output dist
