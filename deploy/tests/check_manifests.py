#!/usr/bin/env python3
"""Checks of deploy/kubernetes and deploy/helm/azflow, run by agent/tests/deploy_manifests.rs.

  equal     the chart's default values render the same objects as the plain manifests
            (parsed and compared as data, so formatting does not matter; the Namespace only with
            namespace.create=true, as `helm install --create-namespace` makes it otherwise)
  variants  each value that switches something switches exactly that
  policy    the DaemonSet keeps what the deployment promises (no privileged, three capabilities,
            probes on the metrics port, read-only root, the runtimes' state read-only and no
            runtime socket below a hostPath, ...), in the plain and rendered forms
  lint      yamllint on every YAML file and on the rendered chart
  validate  kubernetes-validate --strict on the plain manifests and the rendered chart, for the
            newest Kubernetes it knows and the oldest the chart supports; and a broken copy must
            fail, so a validator that checks nothing cannot pass

Prints one line per check; exits 1 with the reasons when one fails.
"""

import copy
import os
import subprocess
import sys
import tempfile

import yaml

sys.dont_write_bytecode = True  # no __pycache__ in the work tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import helm_lite  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
PLAIN = os.path.join(ROOT, "deploy", "kubernetes")
CHART = os.path.join(ROOT, "deploy", "helm", "azflow")
YAMLLINT_CONFIG = os.path.join(ROOT, "deploy", "yamllint.yaml")
# The newest Kubernetes kubernetes-validate knows is "current"; the oldest is the chart's kubeVersion
# floor (securityContext.appArmorProfile is 1.30).
K8S_VERSIONS = ["1.37.0", "1.30.0"]

failures = []
TOML = '[host]\nzone = "us-east-1a"\nzone_id = "use1-az1"\n[[subnet]]\ncidr = "10.1.0.0/20"\nzone = "us-east-1b"\nzone_id = "use1-az2"\n'


def check(ok, what, detail=""):
    if ok:
        print(f"ok: {what}")
    else:
        print(f"FAIL: {what}{': ' + detail if detail else ''}")
        failures.append(what)


def describe(sets):
    return " ".join(s if isinstance(s, str) else f"{s[0]}=<text>" for s in sets) or "defaults"


def plain_files():
    return sorted(os.path.join(PLAIN, f) for f in os.listdir(PLAIN) if f.endswith(".yaml"))


def load_stream(text):
    return [d for d in yaml.safe_load_all(text) if d is not None]


def key(obj):
    m = obj["metadata"]
    return (obj["apiVersion"], obj["kind"], m.get("namespace", ""), m["name"])


def plain_objects():
    objs = {}
    for path in plain_files():
        with open(path) as f:
            for d in load_stream(f.read()):
                objs[key(d)] = d
    return objs


def rendered_text(sets=()):
    docs = helm_lite.render_chart(CHART, sets)
    return "".join(f"---\n# Source: azflow/templates/{name}\n{text.strip().removeprefix('---').lstrip()}\n"
                   for name, text in docs.items() if text.strip())


def rendered_objects(sets=()):
    return {key(d): d for d in load_stream(rendered_text(sets))}


def diff(a, b, path=""):
    """First differences between two parsed objects, as readable lines."""
    if type(a) is not type(b):
        return [f"{path or '/'}: {a!r} != {b!r}"]
    if isinstance(a, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k not in a:
                out.append(f"{path}/{k}: only in the rendered chart: {b[k]!r}")
            elif k not in b:
                out.append(f"{path}/{k}: only in the plain manifest: {a[k]!r}")
            else:
                out += diff(a[k], b[k], f"{path}/{k}")
        return out
    if isinstance(a, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items != {len(b)} items: {a!r} vs {b!r}"]
        return [line for i, (x, y) in enumerate(zip(a, b)) for line in diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def cmd_equal():
    plain = plain_objects()
    for sets, with_ns in [((), False), (("namespace.create=true",), True)]:
        rendered = rendered_objects(sets)
        want = {k: v for k, v in plain.items() if with_ns or k[1] != "Namespace"}
        label = describe(sets)
        check(set(want) == set(rendered), f"{label}: the same objects ({len(want)})",
              f"plain only {sorted(set(want) - set(rendered))}, chart only {sorted(set(rendered) - set(want))}")
        for k in sorted(set(want) & set(rendered)):
            d = diff(want[k], rendered[k])
            check(not d, f"{label}: {k[1]}/{k[3]} renders equal to the plain manifest", "\n  ".join(d[:20]))


def daemonset(objs):
    (ds,) = [o for o in objs.values() if o["kind"] == "DaemonSet"]
    return ds


def container(objs):
    return daemonset(objs)["spec"]["template"]["spec"]["containers"][0]


def env(objs):
    return {e["name"]: e.get("value") for e in container(objs).get("env", [])}


def config_data(objs, name):
    return next(o for o in objs.values() if o["kind"] == "ConfigMap" and o["metadata"]["name"] == name).get("data") or {}


def cmd_variants():
    base = rendered_objects()
    caps = container(base)["securityContext"]["capabilities"]["add"]
    check(caps == ["BPF", "PERFMON", NET_ADMIN], "defaults: capabilities BPF, PERFMON, NET_ADMIN", repr(caps))

    objs = rendered_objects(["sysResource=true"])
    caps = container(objs)["securityContext"]["capabilities"]["add"]
    check(caps == ["BPF", "PERFMON", NET_ADMIN, "SYS_RESOURCE"], "sysResource=true adds SYS_RESOURCE only", repr(caps))
    check(not diff(strip_caps(base), strip_caps(objs)), "sysResource=true changes nothing else")

    check("--pin" in container(base)["args"], "defaults: run --pin")
    objs = rendered_objects(["pin=false"])
    check(container(objs)["args"] == ["run"], "pin=false: no --pin", repr(container(objs)["args"]))

    objs = rendered_objects(["otlp.endpoint=http://collector.observability:4317", "prometheus.port=9999"])
    check(config_data(objs, "azflow")["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://collector.observability:4317",
          "otlp.endpoint sets OTEL_EXPORTER_OTLP_ENDPOINT")
    c = container(objs)
    check(env(objs)["AZFLOW_PROMETHEUS"] == "0.0.0.0:9999" and c["ports"][0]["containerPort"] == 9999
          and c["ports"][0]["hostPort"] == 9999
          and daemonset(objs)["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == "9999",
          "prometheus.port moves the listener, the port, the probes' port and the scrape annotation together")

    toml = TOML
    objs = rendered_objects([("topology", toml)])
    check(config_data(objs, "azflow-topology").get("topology.toml") == toml, "topology lands verbatim in topology.toml",
          repr(config_data(objs, "azflow-topology")))
    check(config_data(objs, "azflow").get("AZFLOW_TOPOLOGY") == "/etc/azflow/topology/topology.toml",
          "topology sets AZFLOW_TOPOLOGY to the mounted file")
    mount = next(m for m in container(objs)["volumeMounts"] if m["name"] == "topology")
    check(mount["mountPath"] == "/etc/azflow/topology", "the topology ConfigMap is mounted where AZFLOW_TOPOLOGY points")
    check("AZFLOW_TOPOLOGY" not in config_data(base, "azflow"), "defaults: no AZFLOW_TOPOLOGY (no file)")

    objs = rendered_objects(["serviceAccount.roleArn="])
    sa = next(o for o in objs.values() if o["kind"] == "ServiceAccount")
    check("annotations" not in sa["metadata"], "serviceAccount.roleArn='' (Pod Identity): no IRSA annotation", repr(sa["metadata"]))

    objs = rendered_objects(["extraEnv=[{name: OTEL_EXPORTER_OTLP_HEADERS, valueFrom: {secretKeyRef: {name: otlp, key: headers}}}]"])
    check(container(objs)["env"][-1]["name"] == "OTEL_EXPORTER_OTLP_HEADERS", "extraEnv is appended to env")

    objs = rendered_objects(["cgroupRoot=/sys/fs/cgroup/unified"])
    vol = next(v for v in daemonset(objs)["spec"]["template"]["spec"]["volumes"] if v["name"] == "cgroup")
    check(vol["hostPath"]["path"] == "/sys/fs/cgroup/unified", "cgroupRoot moves the cgroup hostPath")

    runtime_items = {"AZFLOW_CONTAINERD_STATE": "containerd-tasks", "AZFLOW_CRIO_CONTAINERS": "crio-containers",
                     "AZFLOW_DOCKER_CONTAINERS": "docker-containers"}
    for value, setting in [("containerd", "AZFLOW_CONTAINERD_STATE"), ("crio", "AZFLOW_CRIO_CONTAINERS"),
                           ("docker", "AZFLOW_DOCKER_CONTAINERS")]:
        objs = rendered_objects([f"runtimeState.{value}="])
        check(not diff(strip_runtime(base, {setting: runtime_items[setting]}), objs),
              f"runtimeState.{value}='' drops its volume, mount and {setting}, and nothing else",
              "\n  ".join(diff(strip_runtime(base, {setting: runtime_items[setting]}), objs)[:10]))
    objs = rendered_objects(["runtimeState.containerd=/run/k3s/containerd", "runtimeState.docker=/data/docker/containers"])
    vols = {v["name"]: v for v in daemonset(objs)["spec"]["template"]["spec"]["volumes"]}
    check(vols["containerd-tasks"]["hostPath"]["path"] == "/run/k3s/containerd/io.containerd.runtime.v2.task"
          and vols["docker-containers"]["hostPath"]["path"] == "/data/docker/containers",
          "runtimeState paths move the hostPaths (containerd's task bundles below its state)")
    check(container(objs) == container(base), "runtimeState paths leave the container as it is (same mount points)")

    objs = rendered_objects(["seccompProfile=RuntimeDefault"])
    check(container(objs)["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, "seccompProfile is a value")


NET_ADMIN = "NET_ADMIN"


def strip_caps(objs):
    o = copy.deepcopy(objs)
    for v in o.values():
        if v["kind"] == "DaemonSet":
            v["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]["add"] = []
    return o


def strip_runtime(objs, drop):
    """`objs` without the runtime settings in `drop` ({setting: volume}) and their volumes and mounts."""
    o = copy.deepcopy(objs)
    pod = daemonset(o)["spec"]["template"]["spec"]
    c = pod["containers"][0]
    c["env"] = [e for e in c["env"] if e["name"] not in drop]
    c["volumeMounts"] = [m for m in c["volumeMounts"] if m["name"] not in drop.values()]
    pod["volumes"] = [v for v in pod["volumes"] if v["name"] not in drop.values()]
    return o


def cmd_policy():
    for label, objs in [("plain", plain_objects()), ("chart", rendered_objects())]:
        ds = daemonset(objs)
        pod = ds["spec"]["template"]["spec"]
        c = container(objs)
        sc = c["securityContext"]
        check(len(pod["containers"]) == 1 and not pod.get("initContainers"), f"{label}: one container, no init containers")
        check(pod.get("hostNetwork") is True and pod.get("dnsPolicy") == "ClusterFirstWithHostNet",
              f"{label}: hostNetwork, with cluster DNS")
        check(not pod.get("hostPID") and not pod.get("hostIPC"), f"{label}: no hostPID, no hostIPC")
        check(sc.get("privileged") is False and sc.get("allowPrivilegeEscalation") is False, f"{label}: not privileged, no escalation")
        check(sc["capabilities"] == {"drop": ["ALL"], "add": ["BPF", "PERFMON", "NET_ADMIN"]},
              f"{label}: capabilities exactly BPF, PERFMON, NET_ADMIN", repr(sc["capabilities"]))
        check(sc.get("readOnlyRootFilesystem") is True, f"{label}: read-only root filesystem")
        check(pod.get("tolerations") == [{"operator": "Exists"}], f"{label}: tolerates every taint")
        check(pod.get("priorityClassName") == "system-node-critical", f"{label}: system-node-critical")
        res = c.get("resources", {})
        check(all(res.get(k, {}).get(r) for k in ("requests", "limits") for r in ("cpu", "memory")),
              f"{label}: cpu and memory requests and limits", repr(res))
        port = next(p for p in c["ports"] if p["name"] == "metrics")
        for probe, path in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")]:
            get = c.get(probe, {}).get("httpGet", {})
            check(get.get("path") == path and get.get("port") in ("metrics", port["containerPort"]),
                  f"{label}: {probe} GET {path} on the Prometheus port", repr(get))
        listen = env(objs).get("AZFLOW_PROMETHEUS", "")
        check(listen.endswith(f":{port['containerPort']}") and port.get("hostPort") == port["containerPort"],
              f"{label}: the agent listens on the port the probes use", listen)
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        vols = {v["name"]: v for v in pod["volumes"]}
        bpf = mounts.get("/sys/fs/bpf")
        check(bpf is not None and vols[bpf["name"]]["hostPath"]["path"] == "/sys/fs/bpf" and not bpf.get("readOnly"),
              f"{label}: the node's bpffs at /sys/fs/bpf, writable (pins)")
        cg = mounts.get(env(objs).get("AZFLOW_CGROUP", "?"))
        check(cg is not None and vols[cg["name"]]["hostPath"]["path"] == "/sys/fs/cgroup" and cg.get("readOnly") is True,
              f"{label}: the node's cgroup v2 root where AZFLOW_CGROUP points, read-only")
        runtime_vols = check_runtime_state(label, objs, mounts, vols)
        host_paths = [v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v]
        check(sorted(v["name"] for v in pod["volumes"] if "hostPath" in v)
              == sorted([bpf["name"], cg["name"], *runtime_vols]),
              f"{label}: no other hostPath", repr(host_paths))
        exposed = [(p, s) for p in host_paths for s in RUNTIME_SOCKETS if s.startswith(p.rstrip("/") + "/")]
        check(not exposed, f"{label}: no runtime's API socket below a hostPath", repr(exposed))
        check("--pin" in c["args"], f"{label}: --pin on")
        strategy = ds["spec"]["updateStrategy"]
        check(strategy["type"] == "RollingUpdate" and strategy["rollingUpdate"].get("maxSurge") in (0, "0", None),
              f"{label}: RollingUpdate without surge (one agent per node port)", repr(strategy))
        check(pod.get("serviceAccountName") == "azflow" and pod.get("automountServiceAccountToken") is False,
              f"{label}: the azflow service account, no API token")
        sa = next(o for o in objs.values() if o["kind"] == "ServiceAccount")
        check("eks.amazonaws.com/role-arn" in sa["metadata"].get("annotations", {}), f"{label}: IRSA annotation")
        names = set(config_data(objs, "azflow")) | set(env(objs))
        check("OTEL_EXPORTER_OTLP_ENDPOINT" in names, f"{label}: the OTLP endpoint is a setting")


# Each runtime's state (docs/workloads.md): the agent's setting, the default host directory, and
# the directory below the setting's value that is mounted (containerd: only the task bundles).
RUNTIME_STATE = [
    ("AZFLOW_CONTAINERD_STATE", "/run/containerd/io.containerd.runtime.v2.task", "/io.containerd.runtime.v2.task"),
    ("AZFLOW_CRIO_CONTAINERS", "/run/containers/storage/overlay-containers", ""),
    ("AZFLOW_DOCKER_CONTAINERS", "/var/lib/docker/containers", ""),
]
# Where the runtimes listen (/var/run is /run): a hostPath above one would hand the agent the node.
RUNTIME_SOCKETS = [f"{run}/{sock}" for run in ("/run", "/var/run")
                   for sock in ("containerd/containerd.sock", "crio/crio.sock", "docker.sock", "dockershim.sock")]


def check_runtime_state(label, objs, mounts, vols):
    """Each runtime's state is mounted read-only where the agent's setting points, from the
    runtime's default directory, created if absent (a node runs one runtime). Returns the volumes."""
    names = []
    for setting, host, below in RUNTIME_STATE:
        at = env(objs).get(setting)
        m = mounts.get(f"{at}{below}") if at else None
        v = vols.get(m["name"], {}) if m else {}
        check(m is not None and m.get("readOnly") is True and m.get("recursiveReadOnly") == "IfPossible"
              and m.get("mountPropagation") in (None, "None")
              and v.get("hostPath") == {"path": host, "type": "DirectoryOrCreate"},
              f"{label}: {host} read-only (recursively if possible) where {setting} points, DirectoryOrCreate",
              f"{setting}={at!r}, mount {m!r}, volume {v!r}")
        if m:
            names.append(m["name"])
    return names


def yamllint(paths):
    r = subprocess.run(["yamllint", "-f", "parsable", "-c", YAMLLINT_CONFIG, *paths], capture_output=True, text=True)
    return r.returncode, (r.stdout + r.stderr).strip()


def cmd_lint():
    files = plain_files() + [os.path.join(CHART, "values.yaml"), os.path.join(CHART, "Chart.yaml")]
    rc, out = yamllint(files)
    check(rc == 0, f"yamllint: {len(files)} files of deploy/", out)
    with tempfile.TemporaryDirectory() as tmp:
        for sets in [(), ("sysResource=true", "namespace.create=true", ("topology", TOML))]:
            path = os.path.join(tmp, "rendered.yaml")
            with open(path, "w") as f:
                f.write(rendered_text(sets))
            rc, out = yamllint([path])
            check(rc == 0, f"yamllint: the chart rendered with {describe(sets)}", out)


def validate(paths, version):
    r = subprocess.run(["kubernetes-validate", "--strict", "--quiet", "-k", version, *paths], capture_output=True, text=True)
    return r.returncode, (r.stdout + r.stderr).strip()


def cmd_validate():
    for version in K8S_VERSIONS:
        rc, out = validate(plain_files(), version)
        check(rc == 0, f"kubernetes-validate --strict -k {version}: deploy/kubernetes/*.yaml", out)
    with tempfile.TemporaryDirectory() as tmp:
        for i, sets in enumerate([(), ("sysResource=true", "namespace.create=true", "pin=false", ("topology", TOML))]):
            path = os.path.join(tmp, f"rendered-{i}.yaml")
            with open(path, "w") as f:
                f.write(rendered_text(sets))
            rc, out = validate([path], K8S_VERSIONS[0])
            check(rc == 0, f"kubernetes-validate --strict: the chart rendered with {describe(sets)}", out)
        # A negative control: the validator must reject an unknown field and a mistyped one.
        for name, mutate in [("an unknown field", lambda c: c["securityContext"].update(privilegd=False)),
                             ("a string where a boolean goes", lambda c: c["securityContext"].update(readOnlyRootFilesystem="yes"))]:
            objs = plain_objects()
            ds = daemonset(objs)
            mutate(ds["spec"]["template"]["spec"]["containers"][0])
            path = os.path.join(tmp, "broken.yaml")
            with open(path, "w") as f:
                yaml.safe_dump(ds, f)
            rc, out = validate([path], K8S_VERSIONS[0])
            check(rc != 0, f"kubernetes-validate rejects a DaemonSet with {name}", out)


def main():
    commands = {"equal": cmd_equal, "variants": cmd_variants, "policy": cmd_policy, "lint": cmd_lint, "validate": cmd_validate}
    names = sys.argv[1:] or list(commands)
    for n in names:
        print(f"== {n}")
        commands[n]()
    if failures:
        print(f"{len(failures)} check(s) failed: {', '.join(failures)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
