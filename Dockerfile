# One image for all five services; docker-compose.yml picks the service with
# `command: python -m services.<intake|classifier|metering|billing|console>`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 tierline \
    && useradd --system --uid 10001 --gid tierline --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin tierline

WORKDIR /app

# Pinned dependencies first, in their own layer: code changes do not reinstall them.
COPY requirements.lock ./
RUN pip install -r requirements.lock

# The product only: tools/, tests/ and bench/ stay out (.dockerignore; tests/unit/test_compose.py).
COPY pyproject.toml ./
COPY shared/ shared/
COPY services/ services/
RUN pip install --no-deps . \
    && rm -rf build ./*.egg-info

USER tierline

EXPOSE 8081 8082 8083 8084 8085

# No default service: say how to pick one.
CMD ["python", "-c", "raise SystemExit('run one service: python -m services.<intake|classifier|metering|billing|console>')"]
