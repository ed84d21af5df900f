# One image for every service of the platform (docker-compose.yml picks the command).
# uv installs the locked workspace without the dev group; the services run as `python -m ...`
# and the CLI as `trading ...` from the project's virtual environment.
FROM python:3.11-slim

COPY --from=ghcr.io/astral-sh/uv:latest /uv /usr/local/bin/uv

ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1

WORKDIR /app

# Dependencies first (cached while only the sources change), then the workspace itself.
COPY pyproject.toml uv.lock ./
COPY shared/pyproject.toml shared/pyproject.toml
COPY cli/pyproject.toml cli/pyproject.toml
COPY services/backtester/pyproject.toml services/backtester/pyproject.toml
COPY services/data-collector/pyproject.toml services/data-collector/pyproject.toml
COPY services/exchange-simulator/pyproject.toml services/exchange-simulator/pyproject.toml
COPY services/order-executor/pyproject.toml services/order-executor/pyproject.toml
COPY services/portfolio-manager/pyproject.toml services/portfolio-manager/pyproject.toml
COPY services/strategy-engine/pyproject.toml services/strategy-engine/pyproject.toml
RUN uv sync --frozen --no-dev --all-packages --no-install-workspace

COPY . .
RUN uv sync --frozen --no-dev --all-packages

RUN useradd --create-home --uid 1000 trading && chown -R trading /app
USER trading

CMD ["trading", "--help"]
