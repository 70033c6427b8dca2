// validate_manifests.cjs - validates Kubernetes manifests against the
// Kubernetes API schemas, strictly (unknown fields are errors, as the API
// server's strict field validation makes them).
//
//   node tests/deploy/validate_manifests.cjs DOCS.json
//
// DOCS.json: [{"file": ..., "index": N, "doc": {...}}, ...] (test_manifests.py
// turns the YAML files into it).  Prints one line per document, "ok ..." or
// its errors, and exits 1 if any document fails.
//
// The schemas: the validators of the npm package kubernetes-models (pinned in
// package-lock.json; MIT), JSON-schema validators compiled with ajv from the
// Kubernetes OpenAPI definitions (types, required fields, enums, formats such
// as quantities and int32).  The OpenAPI definitions do not forbid unknown
// fields, so every object is handed to the validator behind a Proxy that
// records which keys the validator looked up: a compiled validator reads
// every property its schema defines, so a key it never read is not in the
// schema (a typo, or a field at the wrong level).  Objects whose keys the
// validator enumerates (labels, annotations, resource lists: maps) and
// objects it does not look into at all (free-form fields) are exempt.
//
// Left out (no schema for them in Debian or npm): KServe's InferenceService
// and Kubeflow's MPIJob CRDs.  For those two, the embedded Kubernetes parts
// (the predictor's PodSpec, the replicas' PodTemplateSpecs, ObjectMeta) go
// through the Kubernetes validators above, and the CRD-specific fields are
// checked against the hand-written field lists CRD_FIELDS below (names,
// types, enums of kserve v0.11+ serving.kserve.io/v1beta1 and mpi-operator
// v0.5+ kubeflow.org/v2beta1, from their API documentation): a check of the
// field names this project uses, not the upstream schema.
"use strict";
const fs = require("fs");
const path = require("path");

let schemaDir, metaDir;
try {
  schemaDir = path.join(path.dirname(require.resolve("kubernetes-models")), "_schemas");
  metaDir = path.join(path.dirname(require.resolve("@kubernetes-models/apimachinery")), "_schemas");
} catch (e) {
  console.error("validate_manifests: kubernetes-models is missing: run `npm ci` in the source tree");
  process.exit(1);
}
// The packages do not export _schemas/; a file path bypasses "exports".
const schema = (name) =>
  require(path.join(name.startsWith("IoK8sApimachinery") ? metaDir : schemaDir, name + ".js")).validate;

// apiVersion + kind -> the OpenAPI definition's name
function definition(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["core", apiVersion];
  const g = group.replace(/\.k8s\.io$/, "").split(".").map((s) => s[0].toUpperCase() + s.slice(1)).join("");
  return "IoK8sApi" + g + version[0].toUpperCase() + version.slice(1) + kind;
}

// Wraps v so that reads of its keys are recorded in `seen` (one record per object).
function track(v, seen, where) {
  if (Array.isArray(v)) return v.map((x, i) => track(x, seen, where + "/" + i));
  if (v === null || typeof v !== "object") return v;
  const rec = { where, keys: Object.keys(v), read: new Set(), listed: false };
  seen.push(rec);
  const inner = {};
  for (const k of rec.keys) inner[k] = track(v[k], seen, where + "/" + k);
  return new Proxy(inner, {
    get(t, k) {
      if (typeof k === "string") rec.read.add(k);
      return t[k];
    },
    has(t, k) {
      if (typeof k === "string") rec.read.add(k);
      return k in t;
    },
    ownKeys(t) {
      rec.listed = true;
      return Reflect.ownKeys(t);
    },
  });
}

function fmtError(e) {
  const p = Object.entries(e.params || {}).map(([k, v]) => k + " " + JSON.stringify(v)).join(", ");
  return (e.instancePath || "/") + ": " + e.keyword + (p ? " (" + p + ")" : "");
}

// Validates v against the named Kubernetes definition, strictly; returns error strings.
function k8s(name, v, where) {
  let validate;
  try {
    validate = schema(name);
  } catch (e) {
    return [where + ": no Kubernetes schema " + name + " in kubernetes-models"];
  }
  const seen = [];
  const ok = validate(track(v, seen, ""));
  const errs = ok ? [] : validate.errors.map((e) => where + fmtError(e));
  for (const r of seen) {
    if (r.listed || r.read.size === 0) continue; // a map, or a free-form object
    for (const k of r.keys) if (!r.read.has(k)) errs.push(where + (r.where || "") + "/" + k + ": unknown field (not in " + name + ")");
  }
  return errs;
}

// Hand-written field lists of the two CRDs (see the header): a type name, an
// enum array, {fields} for an object, or a Kubernetes definition "k8s:Name".
const COMPONENT_EXTENSION = {
  minReplicas: "integer", maxReplicas: "integer", scaleTarget: "integer",
  scaleMetric: ["cpu", "memory", "concurrency", "rps"], containerConcurrency: "integer", timeout: "integer",
  canaryTrafficPercent: "integer", labels: "map", annotations: "map",
};
const CRD_FIELDS = {
  "serving.kserve.io/v1beta1 InferenceService": {
    spec: { fields: { predictor: { podSpec: COMPONENT_EXTENSION } } },
  },
  "kubeflow.org/v2beta1 MPIJob": {
    spec: {
      fields: {
        slotsPerWorker: "integer",
        mpiImplementation: ["OpenMPI", "Intel", "MPICH"],
        launcherCreationPolicy: ["AtStartup", "WaitForWorkersReady"],
        sshAuthMountPath: "string",
        runLauncherAsWorker: "boolean",
        runPolicy: {
          fields: {
            cleanPodPolicy: ["None", "Running", "All"], ttlSecondsAfterFinished: "integer",
            activeDeadlineSeconds: "integer", backoffLimit: "integer", suspend: "boolean",
          },
        },
        mpiReplicaSpecs: {
          required: ["Launcher", "Worker"],
          fields: Object.fromEntries(["Launcher", "Worker"].map((r) => [r, {
            required: ["template"],
            fields: {
              replicas: "integer", restartPolicy: ["Always", "OnFailure", "Never", "ExitCode"],
              template: "k8s:IoK8sApiCoreV1PodTemplateSpec",
            },
          }])),
        },
      },
    },
  },
};

function typeOk(t, v) {
  if (t === "integer") return Number.isInteger(v);
  if (t === "map") return v !== null && typeof v === "object" && !Array.isArray(v) &&
    Object.values(v).every((x) => typeof x === "string");
  return typeof v === t;
}

// Checks v against a hand-written field spec; returns error strings.
function crd(specOf, v, where) {
  if (typeof specOf === "string" && specOf.startsWith("k8s:")) return k8s(specOf.slice(4), v, where);
  if (Array.isArray(specOf)) return specOf.includes(v) ? [] : [where + ": " + JSON.stringify(v) + " not one of " + specOf.join(", ")];
  if (typeof specOf === "string") return typeOk(specOf, v) ? [] : [where + ": not " + (specOf === "map" ? "a map of strings" : "a " + specOf)];
  if (v === null || typeof v !== "object" || Array.isArray(v)) return [where + ": not an object"];
  const errs = [];
  if (specOf.podSpec) {
    // KServe's component specs inline a PodSpec beside their own fields
    const own = {}, pod = {};
    for (const [k, x] of Object.entries(v)) (k in specOf.podSpec ? own : pod)[k] = x;
    for (const [k, x] of Object.entries(own)) errs.push(...crd(specOf.podSpec[k], x, where + "/" + k));
    errs.push(...k8s("IoK8sApiCoreV1PodSpec", pod, where));
    return errs;
  }
  for (const k of specOf.required || []) if (!(k in v)) errs.push(where + "/" + k + ": required");
  for (const [k, x] of Object.entries(v)) {
    if (!(k in specOf.fields)) errs.push(where + "/" + k + ": unknown field");
    else errs.push(...crd(specOf.fields[k], x, where + "/" + k));
  }
  return errs;
}

function validateDoc(d) {
  const kind = d.kind, api = d.apiVersion;
  if (typeof kind !== "string" || typeof api !== "string") return { errs: ["no apiVersion or kind"] };
  const hand = CRD_FIELDS[api + " " + kind];
  if (!hand) {
    const name = definition(api, kind);
    return { errs: k8s(name, d, ""), how: name };
  }
  const errs = [];
  for (const [k, x] of Object.entries(d)) {
    if (k === "apiVersion" || k === "kind") continue;
    if (k === "metadata") errs.push(...k8s("IoK8sApimachineryPkgApisMetaV1ObjectMeta", x, "/metadata"));
    else if (k in hand) errs.push(...crd(hand[k], x, "/" + k));
    else errs.push("/" + k + ": unknown field");
  }
  return { errs, how: "hand-written " + kind + " fields + Kubernetes PodSpec/ObjectMeta schemas" };
}

function main() {
  if (process.argv.length !== 3) {
    console.error("usage: node validate_manifests.cjs DOCS.json");
    process.exit(2);
  }
  const docs = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
  let bad = 0;
  for (const { file, index, doc } of docs) {
    const label = file + "#" + index + " " + doc.kind + "/" + ((doc.metadata || {}).name || "?");
    let r;
    try {
      r = validateDoc(doc);
    } catch (e) {
      r = { errs: ["validator error: " + e.message] };
    }
    if (r.errs.length) {
      bad++;
      for (const e of r.errs) console.log("FAIL " + label + " " + e);
    } else {
      console.log("ok   " + label + " (" + r.how + ")");
    }
  }
  console.log(docs.length - bad + " valid, " + bad + " invalid");
  process.exit(bad ? 1 : 0);
}

main();
