# The README's two set-up commands, `make run` and `make test`, work on a fresh machine:
# they install uv with pip when it is missing, sync the locked workspace, then run.
# Without DATABASE_URL / REDIS_URL the platform and the tests start real embedded
# PostgreSQL and Redis servers under .trading/ and leave them running for the next
# command; `make stop` stops them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# uv on PATH, else the one pip installs as a module (`python3 -m uv`).
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
RUN := $(UV) run --frozen
# bench/*.py scripts, except helper modules (_name.py)
BENCHES := $(filter-out bench/_%,$(sort $(wildcard bench/*.py)))

.PHONY: help uv sync run test lint typecheck bench stop clean migrate migrate-down migrate-new

help:
	@echo "make run        the live platform on the bundled sample (simulator + four services, dry run)"
	@echo "make test       the whole test suite"
	@echo "make lint       ruff check and ruff format --check"
	@echo "make typecheck  mypy"
	@echo "make bench      every benchmark in bench/ (results: docs/BENCHMARKS.md)"
	@echo "make migrate | migrate-down | migrate-new MSG=\"...\"   database migrations"
	@echo "make stop       stop the embedded PostgreSQL and Redis servers"
	@echo "make clean      stop them and delete .trading/ and the tool caches"

uv:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || { \
		echo "uv not found: installing it with pip"; \
		python3 -m pip install --quiet --disable-pip-version-check uv \
		|| python3 -m pip install --quiet --disable-pip-version-check --user --break-system-packages uv; \
	}

sync: uv
	@# --compile-bytecode: every service process imports ccxt, pandas and SQLAlchemy; with the
	@# bytecode written once at install (not per process, e.g. under PYTHONDONTWRITEBYTECODE)
	@# a service starts in about a second instead of several.
	@$(UV) sync --frozen --all-packages --compile-bytecode

# Runs until Ctrl-C; options go to `trading demo`, e.g. make run RUN_ARGS="--duration 120"
run: sync
	$(RUN) trading demo --live $(RUN_ARGS)

test: sync
	$(RUN) pytest

lint: sync
	$(RUN) ruff check .
	$(RUN) ruff format --check .

typecheck: sync
	$(RUN) mypy shared/src strategies services/*/src cli/src

bench: sync
	@test -n "$(BENCHES)" || { echo "no benchmarks in bench/"; exit 1; }
	@set -e; for bench in $(BENCHES); do echo "== $$bench"; $(RUN) python "$$bench"; done

stop: sync
	@$(RUN) python -c 'from pathlib import Path; \
		from shared.config import load_settings; \
		from shared.embedded import stop_postgres, stop_redis; \
		folders = dict.fromkeys([load_settings().trading_data_dir, Path(".trading/test")]); \
		[print(f"stopped {name} in {folder}") for folder in folders \
		 for name, stop in (("PostgreSQL", stop_postgres), ("Redis", stop_redis)) if stop(folder)]'

clean: stop
	rm -rf .trading .pytest_cache .mypy_cache .ruff_cache .hypothesis

migrate: sync
	$(RUN) alembic -c shared/alembic.ini upgrade head

migrate-down: sync
	$(RUN) alembic -c shared/alembic.ini downgrade -1

migrate-new: sync
	@test -n "$(MSG)" || { echo 'usage: make migrate-new MSG="what changed"'; exit 2; }
	$(RUN) alembic -c shared/alembic.ini revision --autogenerate -m "$(MSG)"
