# The front door: every target works from a fresh clone with Python 3.11 and make.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PROTOS := $(wildcard proto/topgun_rpc/*.proto)

.PHONY: install proto test lint bench up clean

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or make PYTHON=/path/to/python3.11)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Generated gRPC code lives in topgun_rpc/ (git-ignored), made from proto/ by grpcio-tools.
.stamp-deps: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev]' --config-settings editable_mode=compat
	@touch $@

.stamp-proto: $(PROTOS) .stamp-deps
	@# Generate beside the live package, then swap, so running processes never see it half-made.
	rm -rf .gen-rpc && mkdir .gen-rpc
	$(PY) -m grpc_tools.protoc -Iproto --python_out=.gen-rpc --grpc_python_out=.gen-rpc --pyi_out=.gen-rpc $(PROTOS)
	touch .gen-rpc/topgun_rpc/__init__.py
	rm -rf topgun_rpc.old && { [ ! -d topgun_rpc ] || mv topgun_rpc topgun_rpc.old; } && mv .gen-rpc/topgun_rpc topgun_rpc
	rm -rf .gen-rpc topgun_rpc.old
	@touch $@

install: .stamp-proto

proto: .stamp-proto

test: install
	$(PY) -m pytest -q

lint: install
	$(PY) -m ruff check libs services tests bench examples topgun
	$(PY) -m ruff format --check libs services tests bench examples topgun
	$(PY) -m mypy libs services topgun

bench: install
	@for b in bench/*_bench.py; do echo "== $$b" >&2; $(PY) $$b || exit 1; done

up: install
	$(PY) -m services.up $(ARGS)

clean:
	rm -rf $(VENV) topgun_rpc .gen-rpc .stamp-* .pytest_cache .mypy_cache .ruff_cache
