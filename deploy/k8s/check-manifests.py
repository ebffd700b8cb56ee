"""Checks rendered Switchboard manifests for what a schema cannot see.

Usage: check-manifests.py TARGET RENDERED.yaml   (TARGET: base, migrate or overlays/NAME)

Prints one line per check and exits non-zero when any fails:
  - no Secret carrying data (the operator creates every Secret);
  - every pod spec meets the Pod Security "restricted" profile, mounts no service-account
    token and sets resources; no secret value is written into an env var;
  - each pod reads only the Secrets its component needs, key by key (no whole-Secret envFrom);
  - long-running containers have startup, liveness and readiness probes;
  - gRPC Services are headless and publish no unready pod;
  - every component has its Deployment, HorizontalPodAutoscaler (autoscaling/v2, CPU) and
    PodDisruptionBudget, spread across nodes; ingress is denied by default;
  - overlays: a Namespace enforcing "restricted" holds every namespaced object;
  - the migration Job runs `migrate` with the three database URLs and cleans up after itself.
"""

import re
import sys
from collections import Counter

import yaml

COMPONENTS = ["gateway", "auth", "conversations", "llm-proxy"]
# The Secrets each pod may read (by the pod's app.kubernetes.io/name).
ALLOWED_SECRETS = {
    "switchboard-gateway": {"switchboard-shared"},
    "switchboard-auth": {"switchboard-auth", "switchboard-shared"},
    "switchboard-conversations": {"switchboard-conversations", "switchboard-shared"},
    "switchboard-llm-proxy": {"switchboard-llm-proxy", "switchboard-shared"},
    "switchboard-migrate": {"switchboard-auth", "switchboard-conversations", "switchboard-llm-proxy"},
    "switchboard-postgres": {"switchboard-postgres"},
    "switchboard-redis": set(),
}
# Env var names whose value is a credential: they must come from a Secret.
SECRET_NAME = re.compile(r"(SECRET|PASSWORD|TOKEN|API_KEY|ENCRYPTION_KEY|DATABASE_URL|REDIS_URL)")
POD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"}
LONG_RUNNING = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass", "StorageClass"}
RESTRICTED_LABELS = ["enforce", "audit", "warn"]


class Report:
    def __init__(self):
        self.failures = []

    def fail(self, message):
        self.failures.append(message)

    def line(self, topic, text):
        print(f"  {topic:<10} {text}")


def pod_spec(obj):
    kind = obj["kind"]
    if kind == "Pod":
        return obj.get("spec", {})
    if kind == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"].get("spec", {})
    return obj["spec"]["template"].get("spec", {})


def pod_labels(obj):
    if obj["kind"] == "Pod":
        return obj["metadata"].get("labels", {})
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["metadata"].get("labels", {})
    return obj["spec"]["template"].get("metadata", {}).get("labels", {})


def containers(spec):
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from spec.get(key) or []


def check_pod(obj, report):
    """The restricted profile, resources, probes and Secret use of one pod template."""
    where = f"{obj['kind']}/{obj['metadata']['name']}"
    spec = pod_spec(obj)
    sc = spec.get("securityContext") or {}
    if spec.get("automountServiceAccountToken") is not False:
        report.fail(f"{where}: automountServiceAccountToken must be false")
    if sc.get("runAsNonRoot") is not True:
        report.fail(f"{where}: securityContext.runAsNonRoot must be true")
    if not isinstance(sc.get("runAsUser"), int) or sc["runAsUser"] == 0:
        report.fail(f"{where}: securityContext.runAsUser must be set to a non-zero uid")
    if (sc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        report.fail(f"{where}: securityContext.seccompProfile.type must be RuntimeDefault")
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(host):
            report.fail(f"{where}: {host} is not allowed")
    for volume in spec.get("volumes") or []:
        if "hostPath" in volume:
            report.fail(f"{where}: hostPath volume {volume['name']} is not allowed")

    app = pod_labels(obj).get("app.kubernetes.io/name", "")
    allowed = ALLOWED_SECRETS.get(app)
    if allowed is None:
        report.fail(f"{where}: pod label app.kubernetes.io/name={app!r} has no Secret allowance in check-manifests.py")
        allowed = set()
    for c in containers(spec):
        cwhere = f"{where} container {c['name']}"
        csc = c.get("securityContext") or {}
        if csc.get("allowPrivilegeEscalation") is not False:
            report.fail(f"{cwhere}: allowPrivilegeEscalation must be false")
        if csc.get("privileged"):
            report.fail(f"{cwhere}: privileged is not allowed")
        caps = csc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            report.fail(f"{cwhere}: capabilities.drop must contain ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            report.fail(f"{cwhere}: capabilities.add may only hold NET_BIND_SERVICE")
        if csc.get("readOnlyRootFilesystem") is not True:
            report.fail(f"{cwhere}: readOnlyRootFilesystem must be true")
        if csc.get("runAsNonRoot") is False or csc.get("runAsUser") == 0:
            report.fail(f"{cwhere}: must not run as root")
        if "seccompProfile" in csc and csc["seccompProfile"].get("type") not in ("RuntimeDefault", "Localhost"):
            report.fail(f"{cwhere}: seccompProfile must be RuntimeDefault")
        resources = c.get("resources") or {}
        requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
        if "cpu" not in requests or "memory" not in requests or "memory" not in limits:
            report.fail(f"{cwhere}: needs cpu and memory requests and a memory limit")
        if obj["kind"] in LONG_RUNNING and c in (spec.get("containers") or []):
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if probe not in c:
                    report.fail(f"{cwhere}: {probe} is missing")
        for source in c.get("envFrom") or []:
            if "secretRef" in source:
                report.fail(f"{cwhere}: envFrom secretRef hands over a whole Secret; map keys with secretKeyRef")
        for env in c.get("env") or []:
            ref = (env.get("valueFrom") or {}).get("secretKeyRef")
            if ref and ref["name"] not in allowed:
                report.fail(f"{cwhere}: reads Secret {ref['name']}, which {app} does not need")
            if "value" in env and SECRET_NAME.search(env["name"]) and env["value"]:
                report.fail(f"{cwhere}: {env['name']} has a literal value; take it from a Secret")


def main():
    target, path = sys.argv[1], sys.argv[2]
    with open(path, encoding="utf-8") as f:
        objects = [d for d in yaml.safe_load_all(f) if d]
    report = Report()
    kinds = Counter(o["kind"] for o in objects)
    by_kind = lambda kind: [o for o in objects if o["kind"] == kind]  # noqa: E731
    name = lambda o: o["metadata"]["name"]  # noqa: E731
    report.line("rendered", f"{len(objects)} objects: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))

    # No plaintext secrets.
    for s in by_kind("Secret"):
        if s.get("data") or s.get("stringData"):
            report.fail(f"Secret/{name(s)} carries data: Secrets are created by the operator, never rendered")
    report.line("secrets", f"{kinds['Secret']} Secret objects, none with data or stringData")

    # Pods.
    pods = [o for o in objects if o["kind"] in POD_KINDS]
    for o in pods:
        check_pod(o, report)
    report.line(
        "pods",
        f"{len(pods)} pod specs ({', '.join(name(o) for o in pods)}): Pod Security restricted, read-only root, "
        "no service-account token, resources set, only the pod's own Secrets and key by key",
    )
    long_running = sum(len(pod_spec(o).get("containers") or []) for o in pods if o["kind"] in LONG_RUNNING)
    if long_running:
        report.line("probes", f"{long_running} long-running containers with startup, liveness and readiness probes")

    # gRPC Services: headless.
    grpc_services = [
        s for s in by_kind("Service") if any(p.get("appProtocol") == "grpc" for p in s["spec"].get("ports", []))
    ]
    for s in grpc_services:
        if s["spec"].get("clusterIP") != "None":
            report.fail(f"Service/{name(s)}: a gRPC Service must be headless (clusterIP: None)")
        if s["spec"].get("publishNotReadyAddresses"):
            report.fail(f"Service/{name(s)}: publishNotReadyAddresses must stay false")
    if grpc_services:
        report.line("services", f"{len(grpc_services)} gRPC Services headless: {', '.join(name(s) for s in grpc_services)}")

    # Components: Deployment + HPA + PDB, spread across nodes; ingress denied by default.
    if target != "migrate":
        deployments = {name(d): d for d in by_kind("Deployment")}
        hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in by_kind("HorizontalPodAutoscaler")}
        pdb_selectors = [p["spec"]["selector"].get("matchLabels", {}) for p in by_kind("PodDisruptionBudget")]
        for component in COMPONENTS:
            deployment = f"switchboard-{component}"
            if deployment not in deployments:
                report.fail(f"Deployment/{deployment} is missing")
                continue
            hpa = hpas.get(deployment)
            if hpa is None or hpa["apiVersion"] != "autoscaling/v2":
                report.fail(f"Deployment/{deployment}: needs an autoscaling/v2 HorizontalPodAutoscaler")
            elif not any((m.get("resource") or {}).get("name") == "cpu" for m in hpa["spec"].get("metrics", [])):
                report.fail(f"HorizontalPodAutoscaler/{deployment}: should scale on CPU utilisation")
            elif hpa["spec"].get("minReplicas", 1) > hpa["spec"]["maxReplicas"]:
                report.fail(f"HorizontalPodAutoscaler/{deployment}: minReplicas above maxReplicas")
            if "replicas" in deployments[deployment]["spec"]:
                report.fail(f"Deployment/{deployment}: leave replicas to the HorizontalPodAutoscaler")
            labels = pod_labels(deployments[deployment])
            if not any(sel and all(labels.get(k) == v for k, v in sel.items()) for sel in pdb_selectors):
                report.fail(f"Deployment/{deployment}: no PodDisruptionBudget selects its pods")
            spread = pod_spec(deployments[deployment]).get("topologySpreadConstraints") or []
            if not any(t.get("topologyKey") == "kubernetes.io/hostname" for t in spread):
                report.fail(f"Deployment/{deployment}: needs a topologySpreadConstraint across nodes")
        summary = ", ".join(
            f"{c} {hpas[f'switchboard-{c}']['spec'].get('minReplicas', 1)}-{hpas[f'switchboard-{c}']['spec']['maxReplicas']}"
            for c in COMPONENTS
            if f"switchboard-{c}" in hpas
        )
        report.line("scaling", f"HPA (CPU) and PDB per component, spread across nodes; replicas {summary}")
        policies = by_kind("NetworkPolicy")
        if not any(p["spec"].get("podSelector") in ({}, None) and "Ingress" in p["spec"].get("policyTypes", [])
                   and not p["spec"].get("ingress") for p in policies):
            report.fail("no default-deny ingress NetworkPolicy (podSelector {}, no ingress rule)")
        report.line("network", f"{len(policies)} NetworkPolicies, ingress denied by default")

    # The migration Job.
    for job in by_kind("Job"):
        spec = job["spec"]
        for field in ("backoffLimit", "ttlSecondsAfterFinished"):
            if field not in spec:
                report.fail(f"Job/{name(job)}: {field} is not set")
        c = pod_spec(job)["containers"][0]
        if c.get("args") != ["migrate"]:
            report.fail(f"Job/{name(job)}: args must be [migrate]")
        env = {e["name"] for e in c.get("env") or []}
        missing = {"AUTH_DATABASE_URL", "CONVERSATIONS_DATABASE_URL", "LLM_DATABASE_URL"} - env
        if missing:
            report.fail(f"Job/{name(job)}: {', '.join(sorted(missing))} not set")
        report.line("migrate", f"Job/{name(job)} runs migrate with the three database URLs, "
                    f"backoffLimit {spec.get('backoffLimit')}, ttlSecondsAfterFinished {spec.get('ttlSecondsAfterFinished')}")

    # Overlays: a restricted Namespace holding everything.
    if target.startswith("overlays/"):
        namespaces = by_kind("Namespace")
        if len(namespaces) != 1:
            report.fail(f"expected one Namespace, found {len(namespaces)}")
        else:
            ns = namespaces[0]
            labels = ns["metadata"].get("labels", {})
            for mode in RESTRICTED_LABELS:
                if labels.get(f"pod-security.kubernetes.io/{mode}") != "restricted":
                    report.fail(f"Namespace/{name(ns)}: pod-security.kubernetes.io/{mode} must be restricted")
            outside = [
                f"{o['kind']}/{name(o)}"
                for o in objects
                if o["kind"] not in CLUSTER_SCOPED and o["metadata"].get("namespace") != name(ns)
            ]
            if outside:
                report.fail(f"objects outside Namespace {name(ns)}: {', '.join(outside)}")
            report.line("namespace", f"{name(ns)}: Pod Security enforce/audit/warn restricted, "
                        f"every namespaced object in it")

    failures = list(dict.fromkeys(report.failures))
    for failure in failures:
        print(f"  FAIL       {failure}")
    report.line("checks", f"{len(failures)} failed" if failures else "all passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
