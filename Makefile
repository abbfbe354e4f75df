# stackkit: every entry point a person needs. `make help` lists them.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
ARTIFACTS ?= artifacts
DATA ?= demo_data
MODEL ?=
RUN ?=
EPOCHS ?=
IMG_SIZE ?=
BATCH ?=
LR ?=
PRETRAINED ?=
PSEUDO ?=
FOLDS ?=
ENGINE ?= local
CPUS ?=
DEVICE ?=
CONFIG ?=
THREADS ?=
export STACKKIT_ARTIFACTS := $(ARTIFACTS)

.PHONY: help setup test test-all lint base demo bench

help:
	@echo "make setup        create $(VENV) and install stackkit with its training and dev extras"
	@echo "make demo         setup, then the whole loop on generated demo data (see README)"
	@echo "make test         the fast test suite (what CI runs)"
	@echo "make test-all     every test, slow ones included"
	@echo "make base MODEL=… train timm backbones on every fold and write their runs (ENGINE=ray: on Ray)"
	@echo "make bench        the meta-stage benchmark (bench/meta.py)"

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[train,dev,ray]'
	touch $@

setup: $(VENV)/.installed

test: setup
	$(PY) -m pytest -q -m "not slow"

test-all: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

base: setup
	@test -n "$(MODEL)" || { echo "error: MODEL is required, e.g. make base MODEL=resnet18"; exit 2; }
	$(PY) -m base_models $(foreach m,$(MODEL),--model "$(m)") --data "$(DATA)" --artifacts "$(ARTIFACTS)" \
	  --engine "$(ENGINE)" $(if $(CPUS),--cpus $(CPUS)) $(if $(DEVICE),--device "$(DEVICE)") \
	  $(if $(RUN),--run "$(RUN)") $(if $(EPOCHS),--epochs $(EPOCHS)) \
	  $(if $(IMG_SIZE),--img-size $(IMG_SIZE)) $(if $(BATCH),--batch $(BATCH)) \
	  $(if $(LR),--lr $(LR)) $(if $(PRETRAINED),--pretrained "$(PRETRAINED)") \
	  $(if $(PSEUDO),--pseudo "$(PSEUDO)") $(if $(FOLDS),--folds "$(FOLDS)") \
	  $(if $(CONFIG),--config "$(CONFIG)") $(if $(THREADS),--threads $(THREADS))

demo: setup
	$(PY) -m base_models.demo --data "$(DATA)" --artifacts "$(ARTIFACTS)"

bench: setup
	$(PY) bench/meta.py
