# One image for the whole project: the operator, the persistence core's CLI and the agent
# runtime. The StatefulSet, the migrations Job and the operator Deployment all run it:
#   occurrence-operator   the Kopf operator
#   occurrence-store      `occurrence-store migrate` (the migrations Job), maintenance
#   occurrence-agent      the agent runtime (default command)
# Runs as uid 10001 with a read-only root filesystem: everything writable (HOME, TMPDIR,
# the embedded SQLite default) points at /tmp, an emptyDir in the pod.

# The base image. A release build pins it by digest, so a moved tag cannot change what ships:
#   make image PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest>
# (`docker buildx imagetools inspect python:3.11-slim-bookworm` shows the current digest).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# 1. The dependencies, from the lock file (exact versions, every file's hash checked): this
# stage and the runtime layer copied from it change only when requirements.lock does.
FROM ${PYTHON_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/occurrence
COPY requirements.lock /src/requirements.lock
RUN /opt/occurrence/bin/pip install --no-compile --no-deps --require-hashes \
      -r /src/requirements.lock \
 && /opt/occurrence/bin/python -m compileall -q /opt/occurrence/lib

# 2. The project as a wheel, built with the locked setuptools (no unpinned build environment).
FROM deps AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN /opt/occurrence/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /dist .

# 3. The runtime: the dependencies' layer, then the project's own small layer on top.
FROM ${PYTHON_IMAGE} AS runtime
ARG UID=10001
RUN groupadd --system --gid ${UID} occurrence \
 && useradd --system --uid ${UID} --gid ${UID} --home-dir /tmp --no-create-home \
      --shell /usr/sbin/nologin occurrence
COPY --from=deps /opt/occurrence /opt/occurrence
COPY --from=wheel /dist /tmp/dist
RUN PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 /opt/occurrence/bin/pip install \
      --quiet --no-deps /tmp/dist/*.whl \
 && /opt/occurrence/bin/pip uninstall --quiet --yes setuptools wheel \
 && rm -rf /tmp/dist
ENV PATH=/opt/occurrence/bin:${PATH} \
    HOME=/tmp \
    TMPDIR=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    OCCURRENCE_DATA_DIR=/tmp/occurrence \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Every entry point the image promises must exist and start.
RUN occurrence-operator --help >/dev/null \
 && occurrence-store --help >/dev/null \
 && occurrence-agent --help >/dev/null
LABEL org.opencontainers.image.title="occurrence-operator" \
      org.opencontainers.image.description="Occurrence operator, persistence core CLI and agent runtime" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080
CMD ["occurrence-agent"]
