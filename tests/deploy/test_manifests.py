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
    unit, when systemd-analyze is installed.
Needs PyYAML (Debian python3-yaml).  Prints "N passed, M failed".
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
import zlib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "integration"))
from common import ROOT, Runner, Server, curl, expect, find_binary, multipart, weights_source  # noqa: E402

try:
    import yaml
except ImportError:
    sys.exit("PyYAML is missing: install the Debian package python3-yaml (%s)" % sys.executable)

SERVE = find_binary("FMNIST_SERVE", 1, ["build/server/fmnist-serve"])
DEPLOY = os.path.join(ROOT, "deploy")
K8S = os.path.join(DEPLOY, "k8s")


# deploy/k8s/ files that `kubectl apply -k deploy/k8s` must not apply, and why.
NOT_KUSTOMIZED = {
    "grid-job.yaml": "a grid search is started on purpose, not with the server",
}


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
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
