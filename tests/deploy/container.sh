#!/bin/sh
# container.sh - builds the Dockerfile with podman and proves the image works.
#
#   sudo tests/deploy/container.sh            # ~10 min the first time (debootstrap + compile)
#
# No Docker engine runs on the CI machines, so this uses rootful podman with
# `--isolation chroot` and the runc runtime (crun fails on hybrid cgroup
# hierarchies).  Steps:
#   1. base image: when no local debian:bookworm-slim exists, debootstrap
#      bookworm (variant minbase) from the Debian mirror, slim it like the
#      official image (no docs/man/locales, empty apt lists, dpkg excludes),
#      and `podman import` it as debian:bookworm-slim; nothing is pulled from
#      a registry (--pull=never)
#   2. podman build --isolation chroot --format docker (keeps HEALTHCHECK)
#   3. image checks: size < 100 MB, non-root user, HEALTHCHECK, no training set
#   4. podman --runtime runc run --network host on a free loopback port:
#      /healthz, /readyz, the healthcheck command, /v1/models, the page,
#      /v1/samples, a classification of real test images sent as PNGs (each
#      must get its true label), fmnist-train eval inside the image
#   4b. deploy/nginx.Dockerfile built and run with deploy/nginx.conf mounted
#      (as in compose.yaml) in front of it: predictions and the page under
#      /fmnist/, a 1 MiB body through nginx's temp files, a JSON 413
#   5. podman stop -t 30 (SIGTERM): the server drains and exits 0
#   6. removes the containers, the test images (KEEP_IMAGE=1 keeps them) and
#      the untagged build-stage images of this run
#
# Needs root and the Debian packages podman, runc, debootstrap, curl, python3
# (installed when missing).  Prints "N passed, M failed"; exit 1 on a failure.
# Environment: MIRROR (Debian mirror for debootstrap), IMAGE (tag, default
# localhost/fmnist-serve:test), KEEP_IMAGE=1, KEEP_BASE=0 (remove the base).
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
IMAGE=${IMAGE:-localhost/fmnist-serve:test}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
NAME=fmnist-ct-$$
LIMIT=100000000   # bytes: the issue's 100 MB target

[ "$(id -u)" -eq 0 ] || { echo "container.sh: needs root (rootful podman, debootstrap)" >&2; exit 2; }
need=""
for p in podman runc debootstrap curl python3; do
    command -v "$p" >/dev/null 2>&1 || [ -x "/usr/sbin/$p" ] || need="$need $p"
done
if [ -n "$need" ]; then
    echo "container.sh: installing$need"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $need >/dev/null
fi

WORK=$(mktemp -d /var/tmp/fmnist-ct.XXXXXX)
# Machines that forbid raising rlimits make podman fail on its default
# ulimits; an empty list is harmless elsewhere.
if [ -z "${CONTAINERS_CONF:-}" ]; then
    printf '[containers]\ndefault_ulimits = []\n' >"$WORK/containers.conf"
    export CONTAINERS_CONF="$WORK/containers.conf"
fi
dangling_before=$(podman images -q -f dangling=true | sort)
cleanup() {
    # The build stages this run left behind (untagged), not anyone else's.
    for id in $(podman images -q -f dangling=true | sort); do
        case " $dangling_before " in *"$id"*) ;; *) podman rmi -f "$id" >/dev/null 2>&1 || true ;; esac
    done
    podman --runtime runc rm -f -t 0 "$NAME" >/dev/null 2>&1 || true
    podman --runtime runc rm -f -t 0 "$NAME-proxy" >/dev/null 2>&1 || true
    [ "${KEEP_IMAGE:-0}" = 1 ] || podman rmi -f "$IMAGE" "${IMAGE%:*}-proxy:test" >/dev/null 2>&1 || true
    [ "${KEEP_BASE:-1}" = 1 ] || podman rmi -f debian:bookworm-slim >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   $1"; }
bad() { failed=$((failed + 1)); echo "FAIL $1"; }
check() { # NAME COMMAND...
    n="$1"; shift
    if "$@"; then ok "$n"; else bad "$n"; fi
}
now() { date +%s; }

# ---------------------------------------------------------------- 1. base
t0=$(now)
if podman image exists debian:bookworm-slim; then
    echo "== base: local debian:bookworm-slim exists"
else
    echo "== base: debootstrap bookworm (minbase) from $MIRROR"
    rootfs="$WORK/rootfs"
    debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
        || { tail -20 "$WORK/debootstrap.log"; exit 1; }
    # What the official slim variant does: keep docs, man pages and
    # translations out now and in every later apt-get install.
    cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'SLIM'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
SLIM
    find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
    rm -rf "$rootfs/usr/share/man/"* "$rootfs/usr/share/info/"* "$rootfs/usr/share/lintian" "$rootfs/usr/share/linda"
    find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
    cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'CLEAN'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";
CLEAN
    printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb http://deb.debian.org/debian-security bookworm-security main\n' \
        "$MIRROR" "$MIRROR" >"$rootfs/etc/apt/sources.list"
    rm -rf "$rootfs/var/lib/apt/lists/"* "$rootfs/var/cache/apt/"*.bin "$rootfs/var/cache/apt/archives/"*.deb \
        "$rootfs/var/log/"*.log "$rootfs/var/log/apt/"*
    tar -C "$rootfs" -c . | podman import --change 'CMD ["bash"]' - debian:bookworm-slim >/dev/null
    rm -rf "$rootfs"
    echo "   base image: $(podman image inspect --format '{{.Size}}' debian:bookworm-slim) bytes, $(( $(now) - t0 )) s"
fi

# ---------------------------------------------------------------- 2. build
echo "== podman build --isolation chroot ($IMAGE)"
t1=$(now)
if podman build --isolation chroot --pull=never --format docker -t "$IMAGE" -f "$ROOT/Dockerfile" "$ROOT" \
        >"$WORK/build.log" 2>&1; then
    ok "podman build ($(( $(now) - t1 )) s)"
else
    tail -40 "$WORK/build.log"
    bad "podman build"
    echo "$passed passed, $failed failed"
    exit 1
fi

# ---------------------------------------------------------------- 3. image
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
echo "   image size: $size bytes ($(( size / 1000000 )) MB)"
check "image size $size < $LIMIT bytes" test "$size" -lt "$LIMIT"
user=$(podman image inspect --format '{{.Config.User}}' "$IMAGE")
check "non-root user ($user)" sh -c "[ -n '$user' ] && [ '${user%%:*}' != 0 ] && [ '${user%%:*}' != root ]"
hc=$(podman image inspect --format '{{json .Config.Healthcheck}}' "$IMAGE" 2>/dev/null || true)
check "HEALTHCHECK in the image" sh -c "echo '$hc' | grep -q fmnist-healthcheck"
stopsig=$(podman image inspect --format '{{.Config.StopSignal}}' "$IMAGE")
check "STOPSIGNAL SIGTERM ($stopsig)" sh -c "[ '$stopsig' = SIGTERM ]"
files=$(podman run --rm --runtime runc --network none --no-healthcheck --entrypoint /bin/sh "$IMAGE" -c \
    'ls /usr/share/fmnist/data /usr/share/fmnist/weights; ls /usr/share/datasets 2>&1; id -u' 2>&1)
check "only the test set in the image" sh -c "echo '$files' | grep -q t10k-images && ! echo '$files' | grep -q train-images"
check "weights in the image" sh -c "echo '$files' | grep -q cnn3.safetensors"
check "runs as uid 10001" sh -c "echo '$files' | tail -1 | grep -qx 10001"

# ---------------------------------------------------------------- 4. run
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
echo "== podman --runtime runc run --network host (port $port)"
t2=$(now)
# --health-interval=disable: no systemd timer (none on CI machines); the
# check below runs the image's HEALTHCHECK command by hand.
podman --runtime runc run -d --name "$NAME" --network host --read-only --health-interval=disable \
    -e FMNIST_HOST=127.0.0.1 -e FMNIST_PORT="$port" -e FMNIST_THREADS=2 "$IMAGE" >/dev/null 2>"$WORK/run.err" \
    || { cat "$WORK/run.err"; bad "podman run"; }
up=0
for _ in $(seq 1 100); do
    if curl -fsS -m 2 "$url/healthz" >/dev/null 2>&1; then up=1; break; fi
    sleep 0.2
done
check "started and /healthz 200 ($(( $(now) - t2 )) s)" test "$up" = 1
if [ "$up" != 1 ]; then podman logs "$NAME" | tail -20; fi
check "/readyz 200" curl -fsS -m 5 -o /dev/null "$url/readyz"
check "HEALTHCHECK command passes in the container" podman --runtime runc healthcheck run "$NAME"
dead=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
check "HEALTHCHECK command fails when nothing answers" sh -c "! podman --runtime runc run --rm --network host \
    --no-healthcheck --entrypoint /usr/local/bin/fmnist-healthcheck -e FMNIST_PORT=$dead '$IMAGE' 2>/dev/null"
get() { curl -fsS -m 5 -o "$WORK/$2" "$url$1" || true; }
get /v1/models models.json
get / index.html
get '/v1/samples?offset=0&count=2' samples.json
check "/v1/models lists cnn3" grep -q '"cnn3"' "$WORK/models.json"
check "page at /" grep -qi '<html' "$WORK/index.html"
check "/v1/samples from the test set" grep -q '"label"' "$WORK/samples.json"

# Real test images as PNGs: each must come back with its true label.
cat >"$WORK/classify.py" <<'PY'
import json, os, subprocess, sys
sys.path.insert(0, os.path.join(sys.argv[1], "tests", "integration"))
from common import png_gray, read_test_images
url, n = sys.argv[2], 10
imgs, labels = read_test_images(n)
right = 0
for i, (px, lab) in enumerate(zip(imgs, labels)):
    path = os.path.join(sys.argv[3], "t%d.png" % i)
    with open(path, "wb") as f:
        f.write(png_gray(28, 28, px))
    out = subprocess.run(["curl", "-fsS", "-m", "10", "--data-binary", "@" + path,
                          "-H", "Content-Type: image/png", url + "/v1/classify"],
                         capture_output=True, check=True).stdout
    body = json.loads(out)
    got = body["predictions"][0]["class_id"]
    right += got == lab
print("%d/%d test images classified correctly through the container" % (right, n))
sys.exit(0 if right >= 9 else 1)
PY
check "classification of real test PNGs" python3 "$WORK/classify.py" "$ROOT" "$url" "$WORK"
check "fmnist-train eval in the image" sh -c "podman --runtime runc run --rm --network none --read-only --no-healthcheck --entrypoint /usr/local/bin/fmnist-train '$IMAGE' \
    eval /usr/share/fmnist/weights/mlp2.safetensors | tee '$WORK/eval.txt' | tail -2; grep -qi accuracy '$WORK/eval.txt'"

# ------------------------------------------------ 4b. the compose proxy
# deploy/nginx.Dockerfile with deploy/nginx.conf mounted as in compose.yaml,
# on the host network in front of the container above (compose itself needs
# bridge networking with DNS, which these machines lack).
PROXY=${IMAGE%:*}-proxy:test
echo "== proxy image (deploy/nginx.Dockerfile) in front of it"
t4=$(now)
if podman build --isolation chroot --pull=never --format docker -t "$PROXY" -f "$ROOT/deploy/nginx.Dockerfile" \
        "$ROOT/deploy" >"$WORK/proxy-build.log" 2>&1; then
    ok "proxy image build ($(( $(now) - t4 )) s, $(podman image inspect --format '{{.Size}}' "$PROXY") bytes)"
    pport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    sed "s/^\( *\)listen 8080;/\1listen 127.0.0.1:$pport;/" "$ROOT/deploy/nginx.conf" >"$WORK/nginx.conf"
    echo "server 127.0.0.1:$port max_fails=1 fail_timeout=10s;" >"$WORK/fmnist-upstream.conf"
    podman --runtime runc run -d --name "$NAME-proxy" --network host \
        -v "$WORK/nginx.conf:/etc/nginx/nginx.conf:ro" -v "$WORK/fmnist-upstream.conf:/etc/nginx/fmnist-upstream.conf:ro" \
        "$PROXY" >/dev/null
    purl="http://127.0.0.1:$pport"
    for _ in $(seq 1 50); do curl -fsS -m 1 -o /dev/null "$purl/fmnist/" 2>/dev/null && break; sleep 0.2; done
    check "classification through the proxy container" python3 "$WORK/classify.py" "$ROOT" "$purl/fmnist" "$WORK"
    check "page under /fmnist/ through the proxy" sh -c "curl -fsS -m 5 '$purl/fmnist/' | grep -qi '<html'"
    head -c 1048576 /dev/zero >"$WORK/1m.bin"
    code=$(curl -sS -m 10 -o /dev/null -w '%{http_code}' --data-binary @"$WORK/1m.bin" "$purl/v1/classify")
    check "1 MiB body buffered by nginx reaches the server ($code)" sh -c "[ '$code' != 413 ] && [ '$code' != 500 ] && [ '${code#4}' != '$code' ]"
    head -c 4194305 /dev/zero >"$WORK/big.bin"
    curl -sS -m 10 -o "$WORK/413.json" -w '%{http_code}' --data-binary @"$WORK/big.bin" "$purl/v1/classify" >"$WORK/413.code"
    check "4 MiB + 1 body: JSON 413 from the proxy" sh -c "grep -qx 413 '$WORK/413.code' && grep -q '\"error\"' '$WORK/413.json'"
    podman --runtime runc stop -t 10 "$NAME-proxy" >/dev/null
    check "proxy stops cleanly (SIGQUIT)" test "$(podman inspect --format '{{.State.ExitCode}}' "$NAME-proxy")" = 0
    podman --runtime runc rm -f "$NAME-proxy" >/dev/null 2>&1 || true
else
    tail -20 "$WORK/proxy-build.log"
    bad "proxy image build"
fi

# ---------------------------------------------------------------- 5. stop
t3=$(now)
podman --runtime runc stop -t 30 "$NAME" >/dev/null 2>&1
code=$(podman inspect --format '{{.State.ExitCode}}' "$NAME")
check "SIGTERM: exit status 0 ($code) after $(( $(now) - t3 )) s" test "$code" = 0
check "SIGTERM: drained" sh -c "podman logs '$NAME' 2>&1 | grep -q 'SIGTERM: draining'"

echo "   timings: total $(( $(now) - t0 )) s"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
