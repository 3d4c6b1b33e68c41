# Everything runs from the virtualenv in .venv/, which the first target that needs it creates.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROTOS := $(shell find protos -name '*.proto')

.PHONY: install run test lint typecheck proto proto-check openapi plugins sdk bench bench-peers chaos clean java

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Both servers on SQLite under ./data/, the logger plugin built into dist/plugins/.
run: $(STAMP) plugins
	$(PY) -m listener_core.devrun

## The whole suite (needs the machine's PostgreSQL and MariaDB).
test: $(STAMP) plugins
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

## Regenerates the committed protobuf code and stubs.
proto: $(STAMP)
	PATH=$(abspath $(VENV))/bin:$$PATH $(PY) -m grpc_tools.protoc -Iprotos \
	  -I$$($(PY) -c 'import google.api.annotations_pb2 as m, pathlib; print(pathlib.Path(m.__file__).parents[2])') \
	  --python_out=. --mypy_out=. --grpc_python_out=. --mypy_grpc_out=. $(PROTOS)
	$(PY) -m api_server.http.openapi_gen

## The OpenAPI document of the HTTP/JSON API, from the protos (make proto also writes it).
openapi: $(STAMP)
	$(PY) -m api_server.http.openapi_gen

## Fails when the committed generated code is stale.
proto-check: proto
	git diff --exit-code -- listener/ api_server/http/openapi.json

plugins: $(STAMP)
	$(PY) -m listener_common.build plugins/* --out dist/plugins

## The Java publisher, clients/java/build/listener-client.jar and its launcher listener-publish,
## from Debian's packages (installs the missing ones when run as root).
java: clients/java/build/listener-client.jar

clients/java/build/listener-client.jar: $(PROTOS) $(shell find clients/java/src -name '*.java') clients/java/build.sh | $(STAMP)
	bash clients/java/build.sh $(abspath $(PY))

## The plugin SDK alone (listener_common, needs only packaging) as
## dist/sdk/listener_sdk-<version>-py3-none-any.whl, built from sdk/pyproject.toml.
sdk: $(STAMP)
	rm -rf build/sdk dist/sdk && mkdir -p build/sdk dist/sdk
	cp sdk/pyproject.toml sdk/README.md build/sdk/
	cp -r listener_common build/sdk/
	find build/sdk -name __pycache__ -prune -exec rm -rf {} +
	$(PY) -m pip wheel --quiet --no-deps --no-build-isolation build/sdk -w dist/sdk
	rm -rf build/sdk

bench: $(STAMP) plugins
	$(PY) -m bench

## Ours as ratios to Celery + Redis and procrastinate, each in its own venv (BENCHMARKS.md).
bench-peers: $(STAMP) plugins
	$(PY) -m bench.peers

## Chaos against real servers on PostgreSQL and SQLite (a few minutes; see docs/operators.md).
chaos: $(STAMP)
	$(PY) -m chaos

clean:
	rm -rf dist data .pytest_cache .mypy_cache clients/java/build

	rm -rf dist build data .pytest_cache .mypy_cache
