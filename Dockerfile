# fmnist-serve container image (issue #6).
#
#   podman build --isolation chroot --format docker -t fmnist-serve .   # or: docker build -t fmnist-serve .
#   podman run --rm -p 8080:8080 fmnist-serve                           # http://localhost:8080/
#
# Two stages on debian:bookworm-slim.  The build stage installs the build
# packages with the project's own tools/install-deps.sh (Debian packages only)
# and builds a meson release build: no -march=native anywhere, the AVX2+FMA
# GEMM kernel is chosen at run time, so the image runs on any x86-64.  The
# runtime stage holds the four runtime libraries, the two stripped binaries,
# weights/*.safetensors (+ reports), static/ and the Fashion-MNIST *test* set
# (t10k-*, 4.4 MB) that /v1/samples and the page's gallery read; never the
# training set.  It runs as an unprivileged user (uid 10001).  fmnist-train is
# built without MPI here (the runtime stage has no Open MPI; it says so under
# mpirun): deploy/k8s/train-mpijob.yaml names a separate training image.
#
# Configuration is by environment variable (every flag of `fmnist-serve
# --help` has one: FMNIST_PORT, FMNIST_THREADS, FMNIST_MAX_BODY_BYTES, ...).
# Stopping: SIGTERM makes the server refuse new connections, finish in-flight
# requests for at most FMNIST_DRAIN_TIMEOUT (20 s here) and exit 0; that fits
# Kubernetes' default 30 s grace period with a 5 s preStop sleep.  With
# `docker stop`/`podman stop` give -t 30 (their default is 10 s).
#
# Health: HEALTHCHECK runs fmnist-healthcheck (GET /healthz with bash's
# /dev/tcp; the image has no curl).  HEALTHCHECK is part of the Docker image
# format: build with podman's `--format docker` to keep it.

ARG BASE=debian:bookworm-slim

FROM ${BASE} AS build
WORKDIR /src
COPY tools/install-deps.sh tools/install-deps.sh
RUN tools/install-deps.sh build && rm -rf /var/lib/apt/lists/*
COPY . .
RUN meson setup /build --buildtype=release -Dtests=disabled -Dserver=enabled -Dmpi=disabled \
 && ninja -C /build server/fmnist-serve model/fmnist-train \
 && strip /build/server/fmnist-serve /build/model/fmnist-train \
 && /build/server/fmnist-serve --help >/dev/null \
 && mkdir -p /out/data \
 && cp /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz \
       /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz /out/data/

FROM ${BASE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        zlib1g libcjson1 libpng16-16 libmicrohttpd12 \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log \
 && groupadd --system --gid 10001 fmnist \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin fmnist
COPY --from=build /build/server/fmnist-serve /build/model/fmnist-train /usr/local/bin/
COPY deploy/healthcheck.sh /usr/local/bin/fmnist-healthcheck
COPY weights/ /usr/share/fmnist/weights/
COPY --from=build /out/data/ /usr/share/fmnist/data/
COPY static/ /usr/share/fmnist/static/

ENV FMNIST_HOST=0.0.0.0 \
    FMNIST_PORT=8080 \
    FMNIST_WEIGHTS=/usr/share/fmnist/weights \
    FMNIST_STATIC=/usr/share/fmnist/static \
    FMNIST_DATA=/usr/share/fmnist/data \
    FMNIST_DEFAULT_MODEL=cnn3 \
    FMNIST_DRAIN_TIMEOUT=20
WORKDIR /usr/share/fmnist
USER 10001:10001
EXPOSE 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 CMD ["/usr/local/bin/fmnist-healthcheck"]
ENTRYPOINT ["/usr/local/bin/fmnist-serve"]
