# syntax=docker/dockerfile:1
# cityvitals: the Kafka dataflow (flows.city_kafka) in a slim, non-root image.
#   docker build -t cityvitals .        # or: docker compose build
# Settings come from the environment exactly as outside a container (README, "Running on Kafka"):
# KAFKA_BOOTSTRAP_SERVERS, CITYVITALS_CONFIG (a YAML file; mount secrets this way) and
# CITYVITALS__<SECTION>__<KEY>. tests/test_container.py checks what can be checked without Docker.

# ---- build stage: wheels of the project and of its pinned dependencies --------------------------
FROM python:3.11-slim AS build
# A compiler only here, for a dependency without a binary wheel; none of it reaches the runtime.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Exactly what the wheel is built from: pyproject.toml ([tool.setuptools] packages and their
# package data) and the README it names as readme.
COPY pyproject.toml README.md ./
COPY cityvitals cityvitals
COPY flows flows
COPY indicators indicators
COPY thresholds thresholds
COPY schemas schemas
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# ---- runtime stage: wheels only, no compiler, no pip cache, a fixed non-root uid ---------------
FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# The wheels are bind-mounted from the build stage for this one step, so no layer keeps them.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels cityvitals
# uid/gid 10001: fixed, so volume ownership is predictable. /data (the lake) and /recovery (the
# Bytewax recovery store) belong to it; named volumes mounted there inherit that ownership.
RUN groupadd --gid 10001 cityvitals \
    && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin cityvitals \
    && mkdir -p /data /recovery \
    && chown cityvitals:cityvitals /data /recovery
USER 10001:10001
WORKDIR /home/cityvitals
ENV CITYVITALS__PIPELINE__OUT=/data
# Healthy = the flow got through its start (the lake's DuckDB views exist) and, when the
# recovery store is known (BYTEWAX_RECOVERY_DIRECTORY or --recovery), its newest snapshot is
# recent: a running flow writes one every -s seconds even when no events arrive, so a stopped
# or stalled cluster turns unhealthy. A few stat calls; see `cityvitals health --help`.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["cityvitals", "health"]
# The Kafka dataflow, one process with two workers, no recovery; compose.yaml runs two
# processes of one cluster with recovery by replacing CMD.
ENTRYPOINT ["python", "-m", "bytewax.run"]
CMD ["flows.city_kafka", "-w", "2"]
