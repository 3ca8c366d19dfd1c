# Sila: `make run` installs what is missing and starts Rasa and Sila; `make test` runs every test.
SHELL := /bin/bash
.DEFAULT_GOAL := run

# Rasa 3.6 runs on Python 3.10 only. pyenv shims answer `python3.10` even when that version is
# not selected, so the interpreter is probed, then looked for in pyenv's versions.
PYTHON310 ?= $(shell for p in python3.10 $$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.10.*/bin/python3.10 2>/dev/null | sort -V | tail -1); do \
	$$p -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null && { echo $$p; break; }; done)
PYTHON311 ?= $(shell for p in python3.11 python3; do \
	$$p -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null && { echo $$p; break; }; done)
SILA := .venv/bin/sila
MODEL_INPUTS := config.yml domain.yml nlu_data/rules.yml $(shell find nlu_data/nlu bot/nlu -name '*.yml' -o -name '*.py' 2>/dev/null)

.PHONY: install run test train bench db nlu-eval clean

install: .venv/.installed .venv-rasa/.installed db models/sila.tar.gz

.venv/.installed: pyproject.toml
	@test -n "$(PYTHON311)" || { echo "Sila needs Python 3.11 (python3.11 on PATH)"; exit 1; }
	$(PYTHON311) -m venv .venv
	.venv/bin/pip install -q --upgrade pip
	.venv/bin/pip install -q -e '.[test]'
	@touch $@

.venv-rasa/.installed: requirements-rasa.txt
	@test -n "$(PYTHON310)" || { echo "Rasa 3.6 needs Python 3.10: install it (e.g. 'pyenv install 3.10') and run make again"; exit 1; }
	$(PYTHON310) -m venv .venv-rasa
	.venv-rasa/bin/pip install -q --upgrade pip 'setuptools<70' wheel
	.venv-rasa/bin/pip install -q -r requirements-rasa.txt
	@touch $@

db: .venv/.installed
	@$(SILA) migrate
	@$(SILA) seed demo

models/sila.tar.gz: $(MODEL_INPUTS) .venv-rasa/.installed .venv/.installed
	$(SILA) train

train: .venv-rasa/.installed .venv/.installed
	$(SILA) train --force

run: install
	@bash scripts/run.sh

test: install
	@bash scripts/ensure-chromium.sh
	.venv/bin/python -m pytest

nlu-eval: install
	$(SILA) nlu test

bench: install
	.venv/bin/python -m bench.run_all
	.venv/bin/python -m bench.webhooks --bot instant

clean:
	rm -rf .venv .venv-rasa models var
