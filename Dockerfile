# syntax=docker/dockerfile:1
# Build stage: wheels for the project and its pinned dependencies.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY cityvitals cityvitals
COPY flows flows
COPY indicators indicators
COPY thresholds thresholds
COPY schemas schemas
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# Runtime stage: no build tools, a non-root user.
FROM python:3.11-slim
RUN useradd --create-home --uid 10001 cityvitals
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER cityvitals
WORKDIR /home/cityvitals
ENV CITYVITALS_OUT=/home/cityvitals/data
HEALTHCHECK --interval=30s --timeout=5s CMD cityvitals --version || exit 1
ENTRYPOINT ["cityvitals"]
CMD ["demo", "--out", "/home/cityvitals/data"]
