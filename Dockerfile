# syntax=docker/dockerfile:1.7
# The perucast image: every Kubeflow Pipelines component (ghcr.io/perucast/perucast:<version>,
# components/kfp_components.py), the Spark driver and executor pods and the TFJob workers run it.
# It holds the project with its pinned dependencies (pyproject.toml + requirements.lock) in
# /opt/venv, a Java 17 runtime for Spark, and no compiler.
#
#   make image                     # docker build -t ghcr.io/perucast/perucast:<version> .
#   docker run --rm IMAGE          # perucast --help
#   docker run --rm -p 8500:8500 -p 8501:8501 -v "$PWD/models:/models:ro" IMAGE \
#       perucast-model-server --port=8500 --rest_api_port=8501 --model_config_file=/models/models.config
#
# Both stages use the same base: the virtualenv built in the first one links to its interpreter
# (/usr/local/bin/python3.11). The tag pins Python and Debian's release; a digest would pin the
# bytes too, but the tag is rebuilt with Debian's security updates, which we want to pick up.

# ---------------------------------------------------------------------------------------------
# builder: a virtualenv with the project and its locked runtime dependencies (no dev extras).
FROM python:3.11.14-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1

# Compilers for any dependency that has no wheel for the target platform (on x86_64 all but three
# pure-Python sdists ship wheels). They stay in this stage.
# DL3008: Debian's archive keeps only the current version of a package, so exact apt pins break the
# build at the next security update; the base image tag pins the release (bookworm) instead.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# The runtime dependencies first, in a layer that survives code changes: [project].dependencies of
# pyproject.toml, constrained to requirements.lock's exact versions.
COPY pyproject.toml requirements.lock ./
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' > /tmp/requirements.txt \
 && pip install -c requirements.lock -r /tmp/requirements.txt

# Then the project itself (a regular, non-editable install into site-packages).
COPY README.md ./
COPY perucast ./perucast
COPY models ./models
COPY components ./components
COPY pipelines ./pipelines
COPY serving ./serving
COPY bench ./bench
RUN pip install --no-deps -c requirements.lock . \
 && pip check

# ---------------------------------------------------------------------------------------------
# runtime: the virtualenv, Java 17 for Spark, tini as PID 1, a non-root user.
FROM python:3.11.14-slim-bookworm AS runtime

ARG VERSION=0.1.0
ARG REVISION=unknown

LABEL org.opencontainers.image.title="perucast" \
      org.opencontainers.image.description="Forecasting for Peru's food supply chains: KFP components, Spark preprocessing, TensorFlow training, perucast-model-server." \
      org.opencontainers.image.source="https://github.com/perucast/perucast" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"

# PERUCAST_REVISION: the image has no .git; perucast.export.code_revision() reads this instead.
# SPARK_HOME: pyspark's wheel is a complete Spark (bin/spark-submit, jars/ with spark-kubernetes).
# PYSPARK_PYTHON: Python workers of executors use the venv too.
ENV PERUCAST_MANIFESTS=/opt/perucast/manifests \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    JAVA_HOME=/usr/lib/jvm/java-17 \
    SPARK_HOME=/opt/venv/lib/python3.11/site-packages/pyspark \
    PYSPARK_PYTHON=/opt/venv/bin/python \
    PERUCAST_REVISION=${REVISION}

# openjdk-17-jre-headless: Spark 4 runs on Java 17. Its postinst needs /usr/share/man/man1, which
# slim images leave out. JAVA_HOME gets an architecture-independent name (the package's directory
# ends in -amd64 or -arm64).
# DL3008: as in the builder, the release is pinned by the base image tag, not by apt versions.
# hadolint ignore=DL3008
RUN mkdir -p /usr/share/man/man1 \
 && apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless tini \
 && rm -rf /var/lib/apt/lists/* \
 && ln -s "$(dirname "$(dirname "$(readlink -f /usr/bin/java)")")" /usr/lib/jvm/java-17 \
 && "$JAVA_HOME/bin/java" -version

# A fixed numeric UID/GID, so Pod Security's runAsNonRoot can verify USER without a passwd lookup
# and manifests can set runAsUser/fsGroup to the same numbers.
RUN groupadd --gid 10001 perucast \
 && useradd --uid 10001 --gid 10001 --no-log-init --create-home --home-dir /home/perucast \
      --shell /usr/sbin/nologin perucast

# Owned by root and read-only for the user: the code cannot be changed by what it runs.
COPY --from=builder /opt/venv /opt/venv
# The launchers render the SparkApplication and TFJob from the same templates as manifests/.
COPY manifests /opt/perucast/manifests

# Spark on Kubernetes starts driver and executor pods with the arguments `driver ...` and
# `executor ...` and no command: the contract of Spark's own image entrypoint, kept here. Any other
# command (KFP's `sh -ec ...`, `python -m components.train ...`, `perucast ...`) runs as given.
COPY --chmod=0755 <<"EOF" /usr/local/bin/perucast-entrypoint
#!/bin/bash
set -euo pipefail

case "${1:-}" in
  driver)
    shift
    exec "$SPARK_HOME/bin/spark-submit" \
      --conf "spark.driver.bindAddress=${SPARK_DRIVER_BIND_ADDRESS}" \
      --deploy-mode client \
      "$@"
    ;;
  executor)
    shift
    classpath="${SPARK_CONF_DIR:-$SPARK_HOME/conf}:${HADOOP_CONF_DIR:+$HADOOP_CONF_DIR:}${SPARK_HOME}/jars/*"
    if [ -n "${SPARK_EXTRA_CLASSPATH:-}" ]; then
      classpath="$classpath:$SPARK_EXTRA_CLASSPATH"
    fi
    # SPARK_JAVA_OPT_0, SPARK_JAVA_OPT_1, ... in numeric order.
    java_opts=()
    while IFS= read -r opt; do
      java_opts+=("$opt")
    done < <(env | grep '^SPARK_JAVA_OPT_' | sort -t_ -k4 -n | sed 's/^[^=]*=//')
    exec "$JAVA_HOME/bin/java" "${java_opts[@]}" \
      -Xms"$SPARK_EXECUTOR_MEMORY" -Xmx"$SPARK_EXECUTOR_MEMORY" \
      -cp "$classpath" \
      org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
      --driver-url "$SPARK_DRIVER_URL" \
      --executor-id "$SPARK_EXECUTOR_ID" \
      --cores "$SPARK_EXECUTOR_CORES" \
      --app-id "$SPARK_APPLICATION_ID" \
      --hostname "$SPARK_EXECUTOR_POD_IP" \
      --resourceProfileId "$SPARK_RESOURCE_PROFILE_ID" \
      --podName "$SPARK_EXECUTOR_POD_NAME"
    ;;
  *)
    exec "$@"
    ;;
esac
EOF

# (The blank line above is needed: hadolint 2.15 fails to parse an instruction that directly
# follows a heredoc's end, hadolint/language-docker#99.)

# The image works before it is pushed: entry points, the step modules, kfp (components run with
# install_kfp_package=False), TensorFlow and Spark's launcher on this Java.
RUN perucast --help >/dev/null \
 && perucast-model-server --help >/dev/null \
 && python -c "import components.train, kfp, pyspark, tensorflow" \
 && test -x "$SPARK_HOME/bin/spark-submit" \
 && spark-submit --version

WORKDIR /home/perucast
USER 10001:10001

# perucast-model-server: gRPC and REST (TensorFlow Serving's ports).
EXPOSE 8500 8501

# No HEALTHCHECK: one image runs batch steps (KFP, Spark, TFJob) and the model server, and only the
# server has something to probe. Kubernetes ignores HEALTHCHECK and uses the probes of the
# manifests (gRPC health on 8500, /v1/models/<name> on 8501); a Docker healthcheck probing 8501
# would mark every batch container unhealthy. The explicit NONE records the decision (and satisfies
# checkov's CKV_DOCKER_2).
HEALTHCHECK NONE

ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/perucast-entrypoint"]
CMD ["perucast", "--help"]
