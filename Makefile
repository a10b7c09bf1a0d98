# Sluice: one entry point for setting up, testing, running and benchmarking.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(VENV)/bin/pip
STAMP   = $(VENV)/.installed

.PHONY: setup check test test-chaos test-kube test-conformance peers lint typecheck unit demo bench bench-smoke bench-hotpath bench-h2load bench-instructions clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[dev,bench]'
	@touch $(STAMP)

setup: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

## The quick loop while working (about a minute on two cores): lint, strict types, then the
## unit, component and layering tests (no end-to-end processes, no benchmark smoke runs).
check: lint typecheck
	$(VENV)/bin/pytest -q -p no:cacheprovider tests/unit tests/component tests/test_layering.py

## The README's test command: lint, strict types, then every test tier.
test: lint typecheck
	$(VENV)/bin/pytest -q -p no:cacheprovider

## Go test peers of the kube tier (kube-apiserver, etcd, Knative's controller, autoscaler and
## queue-proxy), built from the Go module proxy into tests/kube/peers/bin/ when missing.
peers:
	tests/kube/peers/build.sh

## The kube tier: the real API server and Knative control plane on loopback (tests/kube), in a
## network namespace of its own where possible (tests/kube/run.sh).
## The chaos tier: abandoned clients of every style, stalled readers during a drain,
## crashing upstreams and pods, a worker killed under load (about 15 s).
test-chaos: $(STAMP)
	$(VENV)/bin/pytest -q -p no:cacheprovider -m chaos tests/chaos

test-kube: $(STAMP)
	tests/kube/run.sh -q

## Differential conformance: Knative's Go queue-proxy and Sluice's side by side, case by case
## (tests/conformance/run.sh: in a private network namespace, peers built when missing).
test-conformance: $(STAMP)
	tests/conformance/run.sh -q

unit: $(STAMP)
	$(VENV)/bin/pytest -q tests/unit

## The README's main job: the embedded demo. Only what running needs, quietly (the dev and
## benchmark tools come with `make test` / `make bench`).
DEMO_STAMP = $(VENV)/.demo-installed
$(DEMO_STAMP): pyproject.toml
	@$(PYTHON) -m venv $(VENV)
	@$(PIP) install --quiet --disable-pip-version-check -e .
	@touch $@

demo: $(DEMO_STAMP)
	$(VENV)/bin/sluice up examples/

## CPU per proxied request against nginx (engine, queue-proxy, activator), about 3 minutes.
bench-hotpath: $(STAMP)
	$(PY) -m bench.hotpath

## HTTP/2: h2load through Sluice's and Knative's Go queue-proxy in front of nghttpd (root:
## a private network namespace, for the Go sidecar's fixed ports).
bench-h2load: $(STAMP)
	$(PY) -m bench.h2load --netns

## Instructions per request under callgrind: noise-free A/B of builds (needs valgrind).
bench-instructions: $(STAMP)
	$(PY) -m bench.instructions

## Every user scenario (about 6 minutes); results in bench/results/<scenario>/.
bench: $(STAMP)
	$(PY) -m bench all

## A seconds-long run of each scenario with its outputs checked (part of `make test` too).
bench-smoke: $(STAMP)
	$(VENV)/bin/pytest -q -p no:cacheprovider tests/e2e/test_bench_smoke.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache bench/results
