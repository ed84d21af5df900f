# The two set-up commands of the README (`make run`, `make test`) work on a fresh machine:
# they install uv with pip when it is missing, then sync the locked workspace.
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
RUN := $(UV) run --frozen

.PHONY: help uv sync run test lint typecheck migrate migrate-down migrate-new bench clean

help:
	@echo "make run | test | lint | typecheck | migrate | migrate-down | migrate-new MSG=... | bench"

uv:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 \
		|| python3 -m pip install --quiet --disable-pip-version-check uv

sync: uv
	@$(UV) sync --frozen --all-packages --quiet

run: sync
	$(RUN) trading demo

test: sync
	$(RUN) pytest

lint: sync
	$(RUN) ruff check .
	$(RUN) ruff format --check .

typecheck: sync
	$(RUN) mypy shared/src strategies services/*/src cli/src

migrate: sync
	$(RUN) trading db upgrade

migrate-down: sync
	$(RUN) alembic -c shared/alembic.ini downgrade -1

migrate-new: sync
	@test -n "$(MSG)" || { echo 'usage: make migrate-new MSG="what changed"'; exit 2; }
	$(RUN) alembic -c shared/alembic.ini revision --autogenerate -m "$(MSG)"

clean:
	rm -rf .trading .pytest_cache .mypy_cache .ruff_cache
