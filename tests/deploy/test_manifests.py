"""test_manifests.py - the deployment files agree with each other and with the server.

Structural checks of deploy/k8s/*.yaml (kinds, required fields, selectors
that match, probes, security context, resources, HPA, PDB, Ingress),
deploy/compose.yaml, the Dockerfile and deploy/fmnist-serve.service, plus
checks against the real fmnist-serve:
  - the body limit: the server's --max-body-bytes default (from --help) =
    FMNIST_MAX_BODY_BYTES of the Deployment and compose = the Ingress
    proxy-body-size = nginx.conf's client_max_body_size;
  - every probe path of the Deployment answers 200 on a running server;
  - drain deadlines fit: preStop + FMNIST_DRAIN_TIMEOUT < grace period,
    Dockerfile drain < 30 s, compose stop_grace_period and the unit's
    TimeoutStopSec > their drain;
  - the memory limit: a server started with the Deployment's settings is
    sent concurrent max-size (--max-pixels) images; its peak RSS (VmHWM)
    must stay below the Deployment's memory limit;
  - systemd-analyze verify and security --offline (exposure <= 2.0) on the
    unit, when systemd-analyze is installed;
  - every document of deploy/k8s/ and deploy/kserve/ validated against the
    Kubernetes API schemas, strictly (validate_manifests.cjs: the pinned npm
    package kubernetes-models; InferenceService and MPIJob as that file's
    header says), and broken copies of them rejected;
  - the KServe InferenceService's own command line run with $PORT set and
    its model directory: it listens on $PORT, answers its probes and a v2
    inference; its limits equal the Deployment's measured ones;
  - the HPA's Pods metric is the prometheus-adapter rule's, the rule's series
    exists on a real server's /metrics, and its formula (rate of the
    request-seconds) gives a mean in flight in (0, 1] for sequential requests;
  - the MPIJob: -np = workers x slots, --threads = the workers' cpu, the
    training command after mpirun runs (one process, a small subset).
Needs PyYAML (Debian python3-yaml) and node with `npm ci` done.  Prints "N
passed, M failed".
"""
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import http.client
import json
import socket
import time
import zlib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "integration"))
from common import (DATA_DIR, ROOT, Runner, Server, curl, expect, find_binary, multipart, read_test_images,  # noqa: E402
                    weights_source)

try:
    import yaml
except ImportError:
    sys.exit("PyYAML is missing: install the Debian package python3-yaml (%s)" % sys.executable)

SERVE = find_binary("FMNIST_SERVE", 1, ["build/server/fmnist-serve"])
TRAIN = os.environ.get("FMNIST_TRAIN") or os.path.join(os.path.dirname(os.path.dirname(SERVE)), "model", "fmnist-train")
DEPLOY = os.path.join(ROOT, "deploy")
K8S = os.path.join(DEPLOY, "k8s")
KSERVE = os.path.join(DEPLOY, "kserve")
VALIDATOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "validate_manifests.cjs")


# deploy/k8s/ files that `kubectl apply -k deploy/k8s` must not apply, and why.
NOT_KUSTOMIZED = {
    "grid-job.yaml": "a grid search is started on purpose, not with the server",
    "train-mpijob.yaml": "a training run, and it needs the MPI operator",
    "prometheus-adapter-rules.yaml": "the monitoring namespace's adapter configuration",
}


def load_all(*dirs):
    """[(file relative to ROOT, index, document)] of every .yaml under dirs but kustomization.yaml."""
    out = []
    for d in dirs:
        for f in sorted(os.listdir(d)):
            if f.endswith(".yaml") and f != "kustomization.yaml":
                with open(os.path.join(d, f)) as fh:
                    for i, doc in enumerate(yaml.safe_load_all(fh)):
                        if doc:
                            out.append((os.path.relpath(os.path.join(d, f), ROOT), i, doc))
    return out


def one(kind, docs=None):
    """The single document of kind among every manifest."""
    found = [d for _, _, d in (docs or load_all(K8S, KSERVE)) if d.get("kind") == kind]
    expect(len(found) == 1, "%d documents of kind %s" % (len(found), kind))
    return found[0]


def validate(docs):
    """Runs validate_manifests.cjs on [(file, index, doc)]: (exit code, output)."""
    node = shutil.which("node")
    expect(node, "node is missing (tools/install-deps.sh test installs nodejs)")
    fd, path = tempfile.mkstemp(prefix="fmnist-docs-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump([{"file": a, "index": i, "doc": d} for a, i, d in docs], f)
        r = subprocess.run([node, VALIDATOR, path], capture_output=True, text=True, timeout=120)
    finally:
        os.unlink(path)
    return r.returncode, r.stdout + r.stderr


def quantity_cores(v):
    return float(v[:-1]) / 1000 if str(v).endswith("m") else float(v)


def load_k8s():
    """The documents of the kustomization's resources (what `kubectl apply -k` serves), by kind."""
    with open(os.path.join(K8S, "kustomization.yaml")) as fh:
        resources = yaml.safe_load(fh)["resources"]
    docs = {}
    for f in resources:
        with open(os.path.join(K8S, f)) as fh:
            for d in yaml.safe_load_all(fh):
                if d:
                    docs.setdefault(d["kind"], []).append((f, d))
    return docs


def qty_bytes(q):
    """Kubernetes / compose / nginx size: 384Mi, 384M, 4m, 4194304."""
    m = re.fullmatch(r"(\d+)([KMGkmg]i?)?[bB]?", str(q))
    if not m:
        raise ValueError("bad quantity %r" % q)
    n, u = int(m.group(1)), m.group(2) or ""
    if u.endswith("i"):
        return n * 1024 ** " KMG".index(u[0].upper())
    if u in ("k", "m", "g"):  # nginx: binary
        return n * 1024 ** " kmg".index(u)
    return n * 1000 ** " KMG".index(u) if u else n


def env_of(container):
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def server_default_body_limit():
    out = subprocess.run([SERVE, "--help"], capture_output=True, text=True).stdout
    m = re.search(r"--max-body-bytes N.*\n.*default: (\d+)", out)
    expect(m, "no --max-body-bytes default in --help")
    return int(m.group(1))


def big_png(pixels):
    """An RGBA PNG of about `pixels` pixels (4096 wide), light with a dark square: compresses to ~75 KB."""
    w = 4096
    h = pixels // w
    row = b"\x00" + b"\xc8\xc8\xc8\xff" * w
    raw = bytearray(row * h)
    for y in range(h // 3, 2 * h // 3):
        off = y * len(row) + 1 + (w // 3) * 4
        raw[off:off + (w // 3) * 4] = b"\x0a\x0a\x0a\xff" * (w // 3)

    def chunk(k, d):
        return struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(k + d) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(bytes(raw), 6)) + chunk(b"IEND", b""))


def main():
    t = Runner()
    docs = load_k8s()
    limit = server_default_body_limit()
    dep = docs.get("Deployment", [(None, None)])[0][1]

    def pod():
        return dep["spec"]["template"]

    def container():
        cs = pod()["spec"]["containers"]
        expect(len(cs) == 1, "one container expected")
        return cs[0]

    def t_kinds():
        want = {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Ingress"}
        expect(want <= set(docs), "missing kinds: %s" % (want - set(docs)))
        api = {"Deployment": "apps/v1", "Service": "v1", "HorizontalPodAutoscaler": "autoscaling/v2",
               "PodDisruptionBudget": "policy/v1", "Ingress": "networking.k8s.io/v1"}
        for kind, items in docs.items():
            for f, d in items:
                expect(d.get("apiVersion") == api.get(kind), "%s: %s apiVersion %r" % (f, kind, d.get("apiVersion")))
                expect(d.get("metadata", {}).get("name"), "%s: no metadata.name" % f)
                expect(isinstance(d.get("spec"), dict), "%s: no spec" % f)
        with open(os.path.join(K8S, "kustomization.yaml")) as fh:
            k = yaml.safe_load(fh)
        files = sorted(f for f in os.listdir(K8S) if f.endswith(".yaml") and f != "kustomization.yaml"
                       and f not in NOT_KUSTOMIZED)
        expect(sorted(k["resources"]) == files, "kustomization resources %r != %r" % (k["resources"], files))
        for f in NOT_KUSTOMIZED:
            expect(os.path.exists(os.path.join(K8S, f)), "%s is listed in NOT_KUSTOMIZED but absent" % f)
        img = container()["image"].rsplit(":", 1)[0]
        expect(any(i["name"] == img for i in k.get("images", [])), "kustomization images does not name %s" % img)

    def t_deployment():
        s = dep["spec"]
        expect(s["replicas"] >= 2, "replicas %r" % s["replicas"])
        sel = s["selector"]["matchLabels"]
        labels = pod()["metadata"]["labels"]
        expect(all(labels.get(k) == v for k, v in sel.items()), "selector %r vs labels %r" % (sel, labels))
        c = container()
        expect(any(p["containerPort"] == 8080 and p.get("name") == "http" for p in c["ports"]), "port 8080 'http'")
        for probe, paths in (("livenessProbe", ("/healthz", "/v2/health/live")), ("readinessProbe", ("/readyz",)),
                             ("startupProbe", ("/healthz", "/v2/health/live", "/readyz"))):
            g = c[probe]["httpGet"]
            expect(g["path"] in paths and g["port"] in ("http", 8080), "%s: %r" % (probe, g))
        r = c["resources"]
        for res in ("cpu", "memory"):
            req, lim = r["requests"][res], r["limits"][res]
            if res == "memory":
                expect(qty_bytes(req) <= qty_bytes(lim), "memory request > limit")
            else:
                tocpu = lambda v: float(v[:-1]) / 1000 if str(v).endswith("m") else float(v)  # noqa: E731
                expect(tocpu(req) <= tocpu(lim), "cpu request > limit")
        env = env_of(c)
        expect(int(env["FMNIST_MAX_BODY_BYTES"]) == limit, "FMNIST_MAX_BODY_BYTES %s != server %d"
               % (env["FMNIST_MAX_BODY_BYTES"], limit))
        expect(int(env["FMNIST_THREADS"]) >= 1, "FMNIST_THREADS must be set (cores of the node otherwise)")

    def t_security():
        ps = pod()["spec"]
        psc, csc = ps.get("securityContext", {}), container().get("securityContext", {})
        expect(psc.get("runAsNonRoot") is True and psc.get("runAsUser", 0) > 0, "pod securityContext %r" % psc)
        expect(csc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem")
        expect(csc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation")
        expect("ALL" in csc.get("capabilities", {}).get("drop", []), "capabilities drop ALL")
        expect(ps.get("automountServiceAccountToken") is False, "service account token mounted")
        with open(os.path.join(ROOT, "Dockerfile")) as f:
            m = re.search(r"^USER (\d+)", f.read(), re.M)
        expect(m and int(m.group(1)) == psc["runAsUser"], "Dockerfile USER != runAsUser")

    def t_grace():
        c = container()
        drain = int(env_of(c)["FMNIST_DRAIN_TIMEOUT"])
        pre = c["lifecycle"]["preStop"]["exec"]["command"]
        expect(pre[0] == "sleep", "preStop %r" % pre)
        grace = pod()["spec"]["terminationGracePeriodSeconds"]
        expect(int(pre[1]) + drain < grace, "preStop %s + drain %d >= grace %d" % (pre[1], drain, grace))
        with open(os.path.join(ROOT, "Dockerfile")) as f:
            df = f.read()
        m = re.search(r"FMNIST_DRAIN_TIMEOUT=(\d+)", df)
        expect(m and int(pre[1]) + int(m.group(1)) < 30, "image drain must fit Kubernetes' default 30 s")
        expect(re.search(r"^STOPSIGNAL SIGTERM", df, re.M), "STOPSIGNAL")
        expect(re.search(r"^HEALTHCHECK .*fmnist-healthcheck", df, re.M), "HEALTHCHECK")
        expect(re.search(r"^EXPOSE 8080", df, re.M), "EXPOSE")
        # The image must run on any x86-64: no -march=native in the build.
        runs = [l for l in df.splitlines() if not l.lstrip().startswith("#")]
        expect(not any("-march" in l for l in runs), "-march in the Dockerfile's commands")
        for dirpath, dirs, files in os.walk(ROOT):
            dirs[:] = [x for x in dirs if not x.startswith((".", "build", "node_modules"))]
            if "meson.build" in files:
                with open(os.path.join(dirpath, "meson.build")) as f:
                    code = [l.split("#")[0] for l in f]
                expect(not any("march=native" in l for l in code), "march=native in %s/meson.build" % dirpath)

    def t_service_hpa_pdb_ingress():
        pl = pod()["metadata"]["labels"]
        svc = docs["Service"][0][1]
        expect(all(pl.get(k) == v for k, v in svc["spec"]["selector"].items()), "Service selector")
        cports = {p["name"]: p["containerPort"] for p in container()["ports"]}
        sports = {p["name"]: p for p in svc["spec"]["ports"]}
        for p in sports.values():
            expect(p["targetPort"] in cports or p["targetPort"] in cports.values(), "targetPort %r" % p["targetPort"])
        hpa = docs["HorizontalPodAutoscaler"][0][1]["spec"]
        ref = hpa["scaleTargetRef"]
        expect(ref["kind"] == "Deployment" and ref["name"] == dep["metadata"]["name"], "HPA target %r" % ref)
        expect(1 <= hpa["minReplicas"] <= hpa["maxReplicas"], "HPA replicas")
        expect(any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in hpa["metrics"]), "HPA on CPU")
        pdb = docs["PodDisruptionBudget"][0][1]["spec"]
        expect(all(pl.get(k) == v for k, v in pdb["selector"]["matchLabels"].items()), "PDB selector")
        expect(pdb["minAvailable"] < min(hpa["minReplicas"], dep["spec"]["replicas"]), "PDB blocks every drain")
        ing = docs["Ingress"][0][1]
        expect(ing["spec"]["ingressClassName"] == "nginx", "ingress class")
        size = ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
        expect(qty_bytes(size) == limit, "Ingress proxy-body-size %s != server limit %d" % (size, limit))
        for rule in ing["spec"]["rules"]:
            for p in rule["http"]["paths"]:
                b = p["backend"]["service"]
                expect(b["name"] == svc["metadata"]["name"], "Ingress backend %r" % b)
                expect(b["port"].get("name") in sports or b["port"].get("number") in
                       [x["port"] for x in sports.values()], "Ingress port %r" % b["port"])

    def t_nginx_limit():
        with open(os.path.join(DEPLOY, "nginx.conf")) as f:
            conf = f.read()
        sizes = re.findall(r"^\s*client_max_body_size\s+(\S+);", conf, re.M)
        expect(sizes and all(qty_bytes(s) == limit for s in sizes), "nginx client_max_body_size %r != %d" % (sizes, limit))
        expect(re.search(r"include fmnist-upstream\.conf;", conf), "upstream include")

    def t_compose():
        with open(os.path.join(DEPLOY, "compose.yaml")) as f:
            c = yaml.safe_load(f)
        sv = c["services"]
        app, proxy = sv["fmnist-serve"], sv["proxy"]
        expect(app["deploy"]["replicas"] >= 2, "replicas")
        expect(os.path.exists(os.path.join(DEPLOY, app["build"]["context"], app["build"]["dockerfile"])), "app build")
        expect(os.path.exists(os.path.join(DEPLOY, proxy["build"]["context"], proxy["build"]["dockerfile"])), "proxy build")
        mounts = {v.split(":")[1]: v.split(":")[0] for v in proxy["volumes"]}
        expect(mounts.get("/etc/nginx/nginx.conf") == "./nginx.conf", "nginx.conf not mounted: %r" % mounts)
        expect(mounts.get("/etc/nginx/fmnist-upstream.conf") == "./fmnist-upstream.conf", "upstream not mounted")
        with open(os.path.join(DEPLOY, "fmnist-upstream.conf")) as f:
            expect(re.search(r"^server fmnist-serve:8080\b", f.read(), re.M), "upstream must name the service")
        drain = int(app["environment"]["FMNIST_DRAIN_TIMEOUT"])
        expect(int(app["stop_grace_period"].rstrip("s")) > drain, "stop_grace_period <= drain")
        expect(int(app["environment"]["FMNIST_MAX_BODY_BYTES"]) == limit, "compose body limit")
        expect(app.get("read_only") is True, "read_only")
        expect(proxy["depends_on"]["fmnist-serve"]["condition"] == "service_healthy", "depends_on healthy")
        lim = qty_bytes(app["deploy"]["resources"]["limits"]["memory"])
        k8s = qty_bytes(container()["resources"]["limits"]["memory"])
        expect(lim >= k8s * 0.95, "compose memory limit below the measured need")

    def t_probes_live():
        env = env_of(container())
        s = Server(SERVE, ["--weights", weights_source(), "--static", "", "--threads", env["FMNIST_THREADS"]])
        try:
            c = container()
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                r = curl(s.url(c[probe]["httpGet"]["path"]))
                expect(r.status == 200, "%s %s: %r" % (probe, c[probe]["httpGet"]["path"], r))
        finally:
            s.stop()

    def t_memory():
        c = container()
        env = env_of(c)
        mem_limit = qty_bytes(c["resources"]["limits"]["memory"])
        pixels = int(env["FMNIST_MAX_PIXELS"])
        s = Server(SERVE, ["--weights", weights_source(), "--static", "", "--threads", env["FMNIST_THREADS"],
                           "--max-pixels", str(pixels), "--max-body-bytes", env["FMNIST_MAX_BODY_BYTES"]])
        png = big_png(pixels)
        body2, ctype2 = multipart([("a", "a.png", png), ("b", "b.png", png)])
        statuses = []

        def send(body, ctype):
            h = http.client.HTTPConnection("127.0.0.1", s.port, timeout=120)
            h.request("POST", "/v1/classify", body=body, headers={"Content-Type": ctype})
            r = h.getresponse()
            r.read()
            statuses.append(r.status)
        try:
            ths = [threading.Thread(target=send, args=a) for a in
                   ((png, "image/png"), (png, "image/png"), (body2, ctype2), (body2, ctype2))]
            for th in ths:
                th.start()
            for th in ths:
                th.join()
            with open("/proc/%d/status" % s.proc.pid) as f:
                hwm = int(re.search(r"VmHWM:\s+(\d+) kB", f.read()).group(1)) * 1024
        finally:
            s.stop()
        print("     peak RSS %.0f MB with %d max-size images in flight (limit %.0f MB)"
              % (hwm / 1e6, 6, mem_limit / 1e6), flush=True)
        expect(statuses == [200] * 4, "statuses %r" % statuses)
        expect(hwm < mem_limit * 0.9, "peak RSS %d >= 90%% of the memory limit %d" % (hwm, mem_limit))

    def t_systemd():
        unit = os.path.join(DEPLOY, "fmnist-serve.service")
        with open(unit) as f:
            text = f.read()
        keys = {}
        for line in text.splitlines():
            m = re.match(r"^(\w+)=(.*)$", line)
            if m:
                keys.setdefault(m.group(1), []).append(m.group(2))
        need = {"DynamicUser": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
                "NoNewPrivileges": "yes", "CapabilityBoundingSet": "", "MemoryDenyWriteExecute": "yes",
                "Restart": "on-failure", "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX"}
        for k, v in need.items():
            expect(v in keys.get(k, []), "%s=%s missing" % (k, v))
        expect("@system-service" in keys.get("SystemCallFilter", []), "SystemCallFilter=@system-service")
        expect(keys.get("ExecReload") == ["/bin/kill -HUP $MAINPID"], "ExecReload")
        drain = int(re.search(r"FMNIST_DRAIN_TIMEOUT=(\d+)", text).group(1))
        expect(int(keys["TimeoutStopSec"][0]) > drain, "TimeoutStopSec <= drain")
        sa = shutil.which("systemd-analyze")
        if not sa:
            print("     (systemd-analyze not installed: verify/security skipped)", flush=True)
            return
        d = tempfile.mkdtemp(prefix="fmnist-unit-")
        try:
            path = os.path.join(d, "fmnist-serve.service")
            with open(path, "w") as f:  # the installed path does not exist here
                f.write(re.sub(r"^ExecStart=\S+", "ExecStart=" + os.path.abspath(SERVE), text, flags=re.M))
            r = subprocess.run([sa, "verify", path], capture_output=True, text=True)
            out = (r.stdout + r.stderr).strip()
            expect(r.returncode == 0 and not out, "systemd-analyze verify: %s" % out)
            r = subprocess.run([sa, "security", "--offline=true", path], capture_output=True, text=True)
            m = re.search(r"Overall exposure level for \S+: ([\d.]+)", r.stdout)
            expect(m, "systemd-analyze security: %s" % (r.stdout + r.stderr)[-500:])
            print("     systemd-analyze security: exposure %s" % m.group(1), flush=True)
            expect(float(m.group(1)) <= 2.0, "exposure %s > 2.0" % m.group(1))
        finally:
            shutil.rmtree(d)

    def t_schemas():
        docs = load_all(K8S, KSERVE)
        kinds = {d["kind"] for _, _, d in docs}
        want = {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Ingress", "Job",
                "PersistentVolumeClaim", "ConfigMap", "MPIJob", "InferenceService"}
        expect(want <= kinds, "manifests lack %s" % (want - kinds))
        rc, out = validate(docs)
        print("     " + out.strip().splitlines()[-1], flush=True)
        expect(rc == 0 and "0 invalid" in out, "schema validation:\n%s" % out)

    def t_schemas_reject():
        """Broken copies must fail, each for its own reason: the validator can fail."""
        docs = load_all(K8S, KSERVE)

        def broken(pick, edit, needle):
            d = json.loads(json.dumps([d for _, _, d in docs if pick(d)][0]))
            edit(d)
            rc, out = validate([("broken", 0, d)])
            expect(rc == 1 and needle in out, "%s broken (%r): not rejected as expected:\n%s" % (d["kind"], needle, out))

        def kind(k):
            return lambda d: d["kind"] == k

        def pod(d):
            return d["spec"]["template"]["spec"]
        c0 = lambda d: pod(d)["containers"][0]  # noqa: E731
        broken(kind("Deployment"), lambda d: c0(d).update(resource=c0(d)["resources"]), "/containers/0/resource: unknown field")
        broken(kind("Deployment"), lambda d: d["spec"].update(replicas="two"), "/spec/replicas: type")
        broken(kind("Deployment"), lambda d: c0(d)["resources"]["limits"].update(memory="a lot"), "format (format \"quantity\")")
        broken(kind("Deployment"), lambda d: c0(d)["readinessProbe"]["httpGet"].pop("port"), "missingProperty \"port\"")
        broken(kind("HorizontalPodAutoscaler"), lambda d: d["spec"]["metrics"][1]["pods"].update(metrics={}),
               "/pods/metrics: unknown field")
        broken(lambda d: d.get("spec", {}).get("completionMode"), lambda d: d["spec"].update(completionMode="Sharded"),
               "enum")
        broken(kind("Service"), lambda d: d["spec"].update(type="Public"), "enum")
        broken(kind("InferenceService"), lambda d: d["spec"]["predictor"].update(minReplica=1),
               "/spec/predictor/minReplica: unknown field")
        broken(kind("InferenceService"), lambda d: d["spec"]["predictor"].update(scaleMetric="latency"), "not one of")
        broken(kind("InferenceService"), lambda d: d["spec"]["predictor"]["containers"][0].update(ports=8080),
               "/spec/predictor/containers/0/ports: type")
        broken(kind("MPIJob"), lambda d: d["spec"].update(slotsPerWorker="1"), "/spec/slotsPerWorker: not a integer")
        broken(kind("MPIJob"), lambda d: d["spec"]["mpiReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]
               .update(command="sshd"), "/Worker/template/spec/containers/0/command: type")
        broken(kind("MPIJob"), lambda d: d["spec"]["mpiReplicaSpecs"].pop("Worker"), "/spec/mpiReplicaSpecs/Worker: required")

    def t_kserve():
        isvc = one("InferenceService")
        pred = isvc["spec"]["predictor"]
        expect(len(pred["containers"]) == 1, "one predictor container")
        c = pred["containers"][0]
        expect(c["name"] == "kserve-container", "KServe needs the container named kserve-container, not %r" % c["name"])
        ports = c["ports"]
        expect(len(ports) == 1 and ports[0]["name"] in ("http1", "h2c"), "Knative takes one port named http1: %r" % ports)
        port = ports[0]["containerPort"]
        env = env_of(c)
        expect(env.get("STORAGE_URI"), "no STORAGE_URI (a custom predictor's storageUri)")
        expect(env.get("PROTOCOL") == "v2", "PROTOCOL must be v2")
        line = " ".join(c["command"] + c["args"])
        expect("--weights /mnt/models" in line, "the server must read /mnt/models: %s" % line)
        expect(re.search(r"\$\{?PORT\b", line), "the port must come from $PORT: %s" % line)
        for probe, path in (("readinessProbe", "/v2/health/ready"), ("livenessProbe", "/v2/health/live")):
            g = c[probe]["httpGet"]
            expect(g["path"] == path and g["port"] == port, "%s: %r" % (probe, g))
        r, dr = c["resources"], container()["resources"]
        expect(qty_bytes(r["limits"]["memory"]) >= qty_bytes(dr["limits"]["memory"]),
               "memory limit below the Deployment's (the measured worst case)")
        expect(env["FMNIST_MAX_PIXELS"] == env_of(container())["FMNIST_MAX_PIXELS"], "FMNIST_MAX_PIXELS differs")
        expect(int(env["FMNIST_MAX_BODY_BYTES"]) == limit, "FMNIST_MAX_BODY_BYTES != the server's")
        expect(int(env["FMNIST_THREADS"]) == quantity_cores(r["limits"]["cpu"]), "FMNIST_THREADS != cpu limit")
        expect(pred["scaleMetric"] in ("rps", "concurrency") and pred["scaleTarget"] > 0, "scale metric / target")
        # Its own command line, as Knative starts it: $PORT set, /mnt/models holding the weights.
        models = tempfile.mkdtemp(prefix="fmnist-mnt-models-")
        proc = None
        try:
            for f in os.listdir(weights_source()):
                if f.endswith(".safetensors"):
                    shutil.copy(os.path.join(weights_source(), f), models)
            cmd = [x.replace("/usr/local/bin/fmnist-serve", os.path.abspath(SERVE)).replace("/mnt/models", models)
                   for x in c["command"] + c["args"]]
            e = {k: v for k, v in os.environ.items() if not k.startswith("FMNIST_")}
            e.update({k: v for k, v in env.items() if k.startswith("FMNIST_")})
            # PORT=0: the server takes a free port and prints it.  FMNIST_PORT (the image sets 8080)
            # names a port already taken: a command that ignored $PORT could not start.
            taken = socket.socket()
            taken.bind(("127.0.0.1", 0))
            taken.listen(1)
            e.update(PORT="0", FMNIST_HOST="127.0.0.1", FMNIST_STATIC="", FMNIST_PORT=str(taken.getsockname()[1]))
            proc = subprocess.Popen(cmd, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            said, m = [], None
            for line in proc.stdout:  # warnings (no static directory here) come first
                said.append(line)
                m = re.search(r"listening on http://[^ ]*:(\d+)/", line)
                if m or len(said) > 20:
                    break
            taken.close()
            expect(m, "the predictor's command did not start: %r" % "".join(said))
            base = "http://127.0.0.1:%s" % m.group(1)
            for path in ("/v2/health/ready", "/v2/health/live", "/v2/models/cnn3/ready"):
                expect(curl(base + path).status == 200, "%s not 200" % path)
            imgs = read_test_images(1)
            px = list(imgs[0][0]) if imgs else [0] * 784
            body = json.dumps({"inputs": [{"name": "input", "shape": [1, 784], "datatype": "UINT8", "data": px}]})
            r = curl(base + "/v2/models/cnn3/infer", "-H", "Content-Type: application/json", "--data-binary", body)
            expect(r.status == 200 and json.loads(r.body)["outputs"], "v2 infer: %r" % (r,))
            proc.terminate()  # SIGTERM reaches fmnist-serve through the shell's exec: drain, exit 0
            expect(proc.wait(timeout=30) == 0, "the predictor did not exit 0 on SIGTERM")
        finally:
            if proc and proc.poll() is None:
                proc.kill()
            shutil.rmtree(models, ignore_errors=True)

    def t_hpa_adapter():
        hpa = docs["HorizontalPodAutoscaler"][0][1]["spec"]
        pods = [m["pods"] for m in hpa["metrics"] if m["type"] == "Pods"]
        expect(len(pods) == 1, "the HPA needs one Pods metric (requests in flight)")
        cm = one("ConfigMap")
        rules = yaml.safe_load(cm["data"]["config.yaml"])["rules"]
        rule = [r for r in rules if r["name"]["as"] == pods[0]["metric"]["name"]]
        expect(len(rule) == 1, "no prometheus-adapter rule names %s" % pods[0]["metric"]["name"])
        rule = rule[0]
        series = re.match(r"\s*([a-zA-Z_:][\w:]*)\{", rule["seriesQuery"]).group(1)
        expect(re.fullmatch(rule["name"]["matches"], series), "name.matches does not match %s" % series)
        expect(rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}},
               "the rule must map the namespace and pod labels")
        for tag in ("<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"):
            expect(tag in rule["metricsQuery"], "metricsQuery lacks %s" % tag)
        m = re.search(r'rate\(<<\.Series>>\{<<\.LabelMatchers>>,route!="([^"]+)"\}\[(\d+)m\]\)', rule["metricsQuery"])
        expect(m, "metricsQuery is not the rate of the request-seconds without /metrics: %s" % rule["metricsQuery"])
        target = quantity_cores(pods[0]["target"]["averageValue"])
        threads = int(env_of(container())["FMNIST_THREADS"])
        expect(pods[0]["target"]["type"] == "AverageValue" and 0 < target < threads,
               "in-flight target %s must be in (0, FMNIST_THREADS=%d)" % (target, threads))
        # The series on a real server, and the rule's formula on sequential requests: in flight in (0, 1].
        s = Server(SERVE, ["--weights", weights_source(), "--static", "", "--threads", str(threads)])
        try:
            def scrape():
                text = curl(s.url("/metrics")).body.decode()
                vals = re.findall(r'^%s\{route="([^"]+)"\} (\S+)$' % re.escape(series), text, re.M)
                return text, {k: float(v) for k, v in vals}
            text, v0 = scrape()
            t0 = time.time()
            h = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
            for _ in range(300):
                h.request("GET", "/v2/health/ready")
                h.getresponse().read()
            h.close()
            text, v1 = scrape()
            dt = time.time() - t0
            expect(m.group(1) in v1, "route %s is not a label value of %s" % (m.group(1), series))
            inflight = sum(v1[k] - v0.get(k, 0) for k in v1 if k != m.group(1)) / dt
            print("     sequential requests: %.3f in flight by the adapter's formula" % inflight, flush=True)
            expect(0 < inflight <= 1.0, "rate of %s over sequential requests = %.3f, not in (0, 1]" % (series, inflight))
            expect(re.search(r"^fmnist_http_requests_in_flight \d+$", text, re.M), "the in-flight gauge is gone")
        finally:
            s.stop()

    def t_mpijob():
        mj = one("MPIJob")
        spec = mj["spec"]
        rs = spec["mpiReplicaSpecs"]
        launcher = rs["Launcher"]["template"]["spec"]["containers"][0]
        worker = rs["Worker"]["template"]["spec"]["containers"][0]
        expect(launcher["command"] == ["mpirun"], "the launcher runs mpirun")
        args = launcher["args"]
        np_ = int(args[args.index("-np") + 1])
        expect(np_ == rs["Worker"]["replicas"] * spec["slotsPerWorker"], "-np %d != workers x slotsPerWorker" % np_)
        i = [k for k, a in enumerate(args) if a.endswith("/fmnist-train")]
        expect(len(i) == 1 and args[i[0] + 1] == "train", "mpirun must start fmnist-train train: %r" % args)
        train = args[i[0] + 1:]
        expect(float(train[train.index("--threads") + 1]) * spec["slotsPerWorker"]
               == quantity_cores(worker["resources"]["requests"]["cpu"]), "--threads x slots != the worker's cpu request")
        sshd_port = worker["readinessProbe"]["tcpSocket"]["port"]
        expect(f"-p {sshd_port}" == env_of(launcher).get("OMPI_MCA_plm_rsh_args"), "mpirun's ssh port != the workers' sshd")
        expect(spec["sshAuthMountPath"] in " ".join(worker["args"]), "sshd's config is not under sshAuthMountPath")
        job = [d for _, _, d in load_all(K8S) if d["kind"] == "PersistentVolumeClaim"]
        claims = [v["persistentVolumeClaim"]["claimName"] for v in rs["Worker"]["template"]["spec"]["volumes"]
                  if "persistentVolumeClaim" in v]
        expect(claims == [job[0]["metadata"]["name"]], "the workers must mount grid-job.yaml's volume: %r" % claims)
        # The command after mpirun, as one process on a small subset (the volume mapped to a directory).
        if not os.path.exists(os.path.join(DATA_DIR, "train-images-idx3-ubyte.gz")):
            print("     (data set absent: the training command is not run)", flush=True)
            return
        mount = [m["mountPath"] for m in worker["volumeMounts"] if m["name"] == "fmnist"][0]
        vol = tempfile.mkdtemp(prefix="fmnist-mpijob-")
        try:
            os.symlink(DATA_DIR, os.path.join(vol, "data"))
            cmd = [TRAIN] + [a.replace(mount + "/", vol + "/") for a in train] + [
                "--limit", "300", "--val", "100", "--epochs", "1", "--quiet"]
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            expect(r.returncode == 0, "%s: %s" % (" ".join(cmd), (r.stdout + r.stderr)[-500:]))
            out = train[train.index("--out") + 1].replace(mount + "/", vol + "/")
            expect(os.path.exists(out), "no %s" % out)
        finally:
            shutil.rmtree(vol, ignore_errors=True)

    t.run("kinds, apiVersions, kustomize", t_kinds)
    t.run("Deployment", t_deployment)
    t.run("security context", t_security)
    t.run("drain fits grace periods", t_grace)
    t.run("Service, HPA, PDB, Ingress", t_service_hpa_pdb_ingress)
    t.run("nginx body limit", t_nginx_limit)
    t.run("compose.yaml", t_compose)
    t.run("probe paths answer 200", t_probes_live)
    t.run("memory limit > worst case", t_memory)
    t.run("systemd unit", t_systemd)
    t.run("schemas (Kubernetes, KServe, MPIJob)", t_schemas)
    t.run("schemas reject broken copies", t_schemas_reject)
    t.run("KServe InferenceService", t_kserve)
    t.run("HPA in-flight metric + adapter rule", t_hpa_adapter)
    t.run("MPIJob", t_mpijob)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
