# Two commands on a fresh machine:  `make reproduce`  and  `make test`.
# Both create .venv on first use (torch==2.13.0 first: the CPU wheel; a newer torch pulls a CUDA build).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.install-stamp
OUT    ?= out/quick

.PHONY: install reproduce verify test explore lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

reproduce: $(STAMP)
	$(PY) -m deepcheck reproduce --quick --out $(OUT)

verify: $(STAMP)
	$(PY) -m linflow verify

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q

# random hypothesis search (the default `make test` is derandomised); turn what it finds into regression tests
explore: $(STAMP)
	HYPOTHESIS_PROFILE=explore $(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) out .pytest_cache .hypothesis
