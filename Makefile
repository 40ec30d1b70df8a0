# Shuqiao — every target creates the virtual environment and installs what it needs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv demo test check bench proto clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/shuqiao demo

# pytest exits 5 when it collects no test; that is a failure of the suite here too,
# but the message should say so plainly.
# One worker per core; a test file's tests stay on one worker (module-scoped federations).
test: $(STAMP)
	$(PY) -m pytest -q -n auto --dist loadfile $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; fi; exit $$rc

# The fast unit tests only (no node processes): protocols, adapters, ledger, node modules, architecture.
check: $(STAMP)
	$(PY) -m pytest -q -n auto --ignore=tests/e2e -m "not slow" $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m bench $(BENCH_ARGS)

# Regenerates the gRPC modules under node/rpc from proto/ (tests check they match).
proto: $(STAMP)
	$(PY) -m grpc_tools.protoc --proto_path=node/rpc=proto --python_out=. \
	  --grpc_python_out=. --pyi_out=. proto/shuqiao/v1/*.proto

clean:
	rm -rf $(VENV) .pytest_cache demo-run demo-run-* bench-run
