#!/usr/bin/env python3
# Checks the deployment files (deploy/check.sh runs it): every `dhow` command line in
# docker-compose, the Kubernetes manifests and the Helm chart's rendered output uses only
# flags the binary accepts (read from its --help), and the cluster wiring is consistent
# (node ids, --initial-cluster, ports, probes, headless Service, PodDisruptionBudget).
"""Usage:
  check_manifests.py --dhow BIN --compose FILE --kubernetes DIR --dockerfile FILE
                     [--rendered REPLICAS:FILE ...]
  check_manifests.py --self-test

Prints one `error: FILE: ...` line per problem and a summary; exits 1 on any problem.
"""

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile

import yaml

SERVE = ("dhow", "serve")  # the image's entrypoint


class Report:
    def __init__(self):
        self.errors = []
        self.notes = []
        self.flags_checked = 0
        self.invocations = 0

    def error(self, where, msg):
        self.errors.append(f"{where}: {msg}")

    def check(self, cond, where, msg):
        if not cond:
            self.error(where, msg)
        return cond


# ---------------------------------------------------------------- the binary's help


class Help:
    """The commands and flags of a `dhow` binary, from its --help texts."""

    def __init__(self, binary):
        self.binary = binary
        self.cache = {}

    def text(self, path):
        key = tuple(path)
        if key not in self.cache:
            try:
                p = subprocess.run(
                    [self.binary, *path, "--help"],
                    capture_output=True, text=True, timeout=30,
                )
                self.cache[key] = p.stdout if p.returncode == 0 else None
            except OSError as e:
                self.cache[key] = None
                print(f"warning: cannot run {self.binary}: {e}", file=sys.stderr)
        return self.cache[key]

    @staticmethod
    def section(text, title):
        lines, inside = [], False
        for line in text.splitlines():
            if re.match(r"^\S.*:\s*$", line):
                inside = line.strip() == title + ":"
                continue
            if inside:
                lines.append(line)
        return lines

    def commands(self, path):
        text = self.text(path) or ""
        return {
            m.group(1)
            for line in self.section(text, "Commands")
            if (m := re.match(r"^ {2}([a-z][a-z0-9-]*)\s", line))
        }

    def flags(self, path):
        text = self.text(path) or ""
        return {
            m.group(1)
            for line in self.section(text, "Options")
            if (m := re.match(r"^\s+(?:-\w,\s+)?--([A-Za-z0-9][A-Za-z0-9-]*)", line))
        }


def check_flags(report, help_, where, argv):
    """argv is a whole `dhow ...` command line; checks its subcommand and flags."""
    report.invocations += 1
    path, rest = [], argv[1:]
    if help_.text([]) is None:
        return
    while rest and not rest[0].startswith("-") and rest[0] in help_.commands(path):
        path.append(rest.pop(0))
    if rest and not rest[0].startswith("-") and help_.commands(path):
        report.error(where, f"`{' '.join(['dhow', *path, rest[0]])}`: the binary has no "
                            f"command `{rest[0]}` (see `{' '.join(['dhow', *path, '--help'])}`)")
        return
    known = help_.flags(path)
    for tok in rest:
        if not tok.startswith("--") or tok == "--":
            continue
        name = tok[2:].split("=", 1)[0]
        report.flags_checked += 1
        report.check(name in known, where,
                     f"flag --{name} is not accepted by `dhow {' '.join(path)}` "
                     f"(see `{help_.binary} {' '.join(path)} --help`)")


def flag_value(argv, name):
    """The value of --name in argv (`--name V` or `--name=V`), or None."""
    for i, tok in enumerate(argv):
        if tok == f"--{name}":
            return argv[i + 1] if i + 1 < len(argv) else ""
        if tok.startswith(f"--{name}="):
            return tok.split("=", 1)[1]
    return None


def port_of(addr):
    return addr.rsplit(":", 1)[1] if addr and ":" in addr else None


def parse_initial_cluster(report, where, value):
    """[(id, host, port)] from `1=host:port,2=host:port`."""
    members = []
    for part in (value or "").split(","):
        m = re.fullmatch(r"(\d+)=([A-Za-z0-9.-]+):(\d+)", part)
        if not report.check(m, where, f"--initial-cluster entry `{part}` is not ID=HOST:PORT"):
            continue
        members.append((int(m.group(1)), m.group(2), m.group(3)))
    ids = [m[0] for m in members]
    report.check(len(set(ids)) == len(ids), where, f"--initial-cluster repeats an id: {ids}")
    report.check(0 not in ids, where, "--initial-cluster uses node id 0 (ids are non-zero)")
    return members


# ---------------------------------------------------------------- docker-compose


def as_argv(cmd):
    if cmd is None:
        return []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def dhow_commands_in(argv):
    """The `dhow ...` command lines in an argv (direct, or inside `sh -c SCRIPT`)."""
    if len(argv) >= 3 and os.path.basename(argv[0]) in ("sh", "bash") and argv[1] == "-c":
        script = argv[2].replace("\\\n", " ")
        return [c for seg in re.split(r"[;&|\n]+", script)
                for c in dhow_commands_in(shlex.split(seg, comments=True))]
    for i, tok in enumerate(argv):
        if os.path.basename(tok) == "dhow":
            return [["dhow", *argv[i + 1:]]]
    return []


def check_compose(report, help_, path):
    where = os.path.relpath(path)
    with open(path) as f:
        doc = yaml.safe_load(f)
    services = (doc or {}).get("services") or {}
    report.check(len(services) == 3, where, f"expected 3 services, found {len(services)}")
    nodes = {}  # node id -> (service, argv)
    for name, svc in services.items():
        w = f"{where}: service {name}"
        entry = as_argv(svc.get("entrypoint")) or list(SERVE)
        argv = entry + as_argv(svc.get("command"))
        if help_:
            check_flags(report, help_, w, argv)
        test = as_argv((svc.get("healthcheck") or {}).get("test"))
        if report.check(test, w, "no healthcheck"):
            if test[0] == "CMD-SHELL":
                test = ["sh", "-c", " ".join(test[1:])]
            elif test[0] == "CMD":
                test = test[1:]
            for cmd in dhow_commands_in(test):
                if help_:
                    check_flags(report, help_, f"{w} healthcheck", cmd)
        node_id = flag_value(argv, "node-id")
        if report.check(node_id and node_id.isdigit() and int(node_id) > 0, w,
                        f"--node-id `{node_id}` is not a positive integer"):
            report.check(int(node_id) not in nodes, w, f"node id {node_id} used twice")
            nodes[int(node_id)] = (name, svc, argv)
        grpc = flag_value(argv, "grpc-addr") or ""
        report.check(grpc.startswith("0.0.0.0:"), w, f"--grpc-addr {grpc!r} is not 0.0.0.0:PORT")
        peer = flag_value(argv, "peer-addr") or ""
        report.check(peer.startswith("0.0.0.0:"), w, f"--peer-addr {peer!r} is not 0.0.0.0:PORT")
        targets = [str(p).rsplit(":", 1)[-1] for p in svc.get("ports") or []]
        report.check(port_of(grpc) in targets, w,
                     f"the public port {port_of(grpc)} is not published (ports: {targets})")
        data_dir = flag_value(argv, "data-dir") or "/data"
        mounts = [str(v).split(":")[1] for v in svc.get("volumes") or [] if ":" in str(v)]
        report.check(data_dir in mounts, w, f"no volume mounted at the data dir {data_dir}")
    clusters = {flag_value(a, "initial-cluster") for _, _, a in nodes.values()}
    if report.check(len(clusters) == 1, where, "the services' --initial-cluster differ"):
        members = parse_initial_cluster(report, where, clusters.pop())
        report.check(sorted(m[0] for m in members) == sorted(nodes), where,
                     f"--initial-cluster ids {[m[0] for m in members]} are not the "
                     f"services' node ids {sorted(nodes)}")
        for node_id, host, port in members:
            if node_id in nodes:
                name, svc, argv = nodes[node_id]
                report.check(host in (name, svc.get("hostname")), where,
                             f"--initial-cluster gives node {node_id} host {host}, "
                             f"but node {node_id} is service {name}")
                report.check(port == port_of(flag_value(argv, "peer-addr")), where,
                             f"--initial-cluster gives node {node_id} port {port}, but "
                             f"service {name} listens for peers on "
                             f"{flag_value(argv, 'peer-addr')}")


# ---------------------------------------------------------------- Kubernetes


def run_container(report, where, container, hostname, namespace):
    """The argv the container runs `dhow` with, its shell script (if any) run by sh with a
    stand-in `dhow` that records its arguments."""
    command = [str(c) for c in container.get("command") or []]
    args = [str(a) for a in container.get("args") or []]
    argv = (command or list(SERVE)) + args
    if not (len(argv) >= 3 and os.path.basename(argv[0]) in ("sh", "bash") and argv[1] == "-c"):
        return argv
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "argv")
        fake = os.path.join(tmp, "dhow")
        with open(fake, "w") as f:
            f.write(f"#!/bin/sh\nprintf '%s\\0' dhow \"$@\" > '{out}'\n")
        os.chmod(fake, 0o755)
        env = {"PATH": f"{tmp}:/usr/bin:/bin", "HOSTNAME": hostname,
               "POD_NAMESPACE": namespace}
        for e in container.get("env") or []:
            if "value" in e:
                env[e["name"]] = str(e["value"])
        p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
        if not report.check(p.returncode == 0 and os.path.exists(out), where,
                            f"the container's script did not run dhow as {hostname} "
                            f"(exit {p.returncode}: {p.stderr.strip()})"):
            return None
        with open(out) as f:
            return f.read().rstrip("\0").split("\0")


def check_kubernetes(report, help_, where, docs, replicas, namespace="NAMESPACE"):
    docs = [d for d in docs if d]
    kinds = {}
    for d in docs:
        kinds.setdefault(d.get("kind"), []).append(d)
    sets = kinds.get("StatefulSet", [])
    if not report.check(len(sets) == 1, where, f"expected 1 StatefulSet, found {len(sets)}"):
        return
    sts = sets[0]
    name = sts["metadata"]["name"]
    spec = sts["spec"]
    w = f"{where}: StatefulSet {name}"
    report.check(spec.get("replicas") == replicas, w,
                 f"replicas is {spec.get('replicas')}, expected {replicas}")
    report.check(spec.get("podManagementPolicy") == "Parallel", w,
                 "podManagementPolicy is not Parallel")
    pod_labels = spec["template"]["metadata"].get("labels") or {}
    services = {s["metadata"]["name"]: s for s in kinds.get("Service", [])}

    def selects_pods(obj_selector):
        return bool(obj_selector) and all(pod_labels.get(k) == v for k, v in obj_selector.items())

    headless = services.get(spec.get("serviceName"))
    if report.check(headless, w, f"serviceName {spec.get('serviceName')} is no Service here"):
        hs = headless["spec"]
        report.check(hs.get("clusterIP") == "None", w, "the serviceName Service is not headless")
        report.check(hs.get("publishNotReadyAddresses") is True, w,
                     "the headless Service lacks publishNotReadyAddresses: true "
                     "(peers could not resolve each other before a quorum forms)")
    clients = [s for s in services.values() if s["spec"].get("clusterIP") != "None"]
    report.check(clients, where, "no client Service (one that is not headless)")
    for s in services.values():
        report.check(selects_pods(s["spec"].get("selector")), where,
                     f"Service {s['metadata']['name']} does not select the StatefulSet's pods")
    pdbs = kinds.get("PodDisruptionBudget", [])
    if report.check(len(pdbs) == 1, where, f"expected 1 PodDisruptionBudget, found {len(pdbs)}"):
        report.check(pdbs[0]["spec"].get("maxUnavailable") == 1, where,
                     "the PodDisruptionBudget's maxUnavailable is not 1")
        report.check(selects_pods(pdbs[0]["spec"].get("selector", {}).get("matchLabels")),
                     where, "the PodDisruptionBudget does not select the StatefulSet's pods")
    claims = [c["metadata"]["name"] for c in spec.get("volumeClaimTemplates") or []]
    report.check(claims, w, "no volumeClaimTemplates")
    containers = spec["template"]["spec"].get("containers") or []
    dhow_c = [c for c in containers if c.get("name") == "dhow"] or containers[:1]
    if not report.check(dhow_c, w, "no container"):
        return
    c = dhow_c[0]
    cw = f"{w} container {c.get('name')}"
    ports = {p.get("name"): str(p.get("containerPort")) for p in c.get("ports") or []}
    for probe in ("readinessProbe", "livenessProbe"):
        grpc = (c.get(probe) or {}).get("grpc")
        if report.check(grpc, cw, f"no {probe} with grpc"):
            report.check(str(grpc.get("port")) == ports.get("grpc"), cw,
                         f"{probe} checks port {grpc.get('port')}, not the grpc port "
                         f"{ports.get('grpc')}")
            # Readiness is health "" (NOT_SERVING without a leader); liveness must ask
            # "liveness", or a node without a quorum would be restarted in a loop.
            want = "liveness" if probe == "livenessProbe" else None
            report.check(grpc.get("service") == want, cw,
                         f"{probe} asks health service {grpc.get('service')!r}, not {want!r}")
    requests = (c.get("resources") or {}).get("requests") or {}
    report.check("cpu" in requests and "memory" in requests, cw,
                 "resources.requests lacks cpu or memory")
    mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts") or []}
    members_seen = set()
    for ordinal in range(replicas):
        hostname = f"{name}-{ordinal}"
        argv = run_container(report, cw, c, hostname, namespace)
        if argv is None:
            continue
        ow = f"{cw} (pod {hostname})"
        cmds = dhow_commands_in(argv) if argv[0] != "dhow" else [argv]
        if not report.check(cmds, ow, "runs no dhow command"):
            continue
        argv = cmds[0]
        if help_ and ordinal == 0:
            check_flags(report, help_, cw, argv)
        report.check(argv[:2] == list(SERVE), ow, f"runs `{' '.join(argv[:2])}`, not dhow serve")
        report.check(flag_value(argv, "node-id") == str(ordinal + 1), ow,
                     f"--node-id is {flag_value(argv, 'node-id')}, expected {ordinal + 1}")
        report.check(port_of(flag_value(argv, "grpc-addr")) == ports.get("grpc"), ow,
                     f"--grpc-addr {flag_value(argv, 'grpc-addr')} is not on the grpc port "
                     f"{ports.get('grpc')}")
        report.check(port_of(flag_value(argv, "peer-addr")) == ports.get("peer"), ow,
                     f"--peer-addr {flag_value(argv, 'peer-addr')} is not on the peer port "
                     f"{ports.get('peer')}")
        data_dir = flag_value(argv, "data-dir")
        report.check(data_dir in mounts.values() and any(mounts.get(n) == data_dir
                                                          for n in claims), ow,
                     f"the data dir {data_dir} is not a volumeClaimTemplate's mount")
        report.check(flag_value(argv, "initial-cluster-state") in ("new", "existing"), ow,
                     "--initial-cluster-state is not new or existing")
        value = flag_value(argv, "initial-cluster")
        members_seen.add(value)
        if ordinal > 0:
            continue  # the same --initial-cluster (checked below) as pod 0's
        members = parse_initial_cluster(report, ow, value)
        report.check(len(members) == replicas, ow,
                     f"--initial-cluster has {len(members)} entries, expected {replicas}")
        for node_id, host, port in members:
            expect = f"{name}-{node_id - 1}.{spec.get('serviceName')}.{namespace}.svc."
            report.check(host.startswith(expect), ow,
                         f"--initial-cluster gives node {node_id} host {host}, "
                         f"expected {expect}...")
            report.check(port == ports.get("peer"), ow,
                         f"--initial-cluster gives node {node_id} port {port}, "
                         f"not the peer port {ports.get('peer')}")
    report.check(len(members_seen) <= 1, cw, "the pods' --initial-cluster differ")
    report.notes.append(f"{where}: {replicas} nodes, {len(docs)} objects")


def load_docs(paths):
    docs = []
    for p in paths:
        with open(p) as f:
            docs.extend(yaml.safe_load_all(f))
    return docs


def check_dockerfile(report, help_, path):
    where = os.path.relpath(path)
    with open(path) as f:
        text = re.sub(r"\\\n", " ", f.read())
    report.check(re.search(r'^ENTRYPOINT \["dhow", "serve"\]', text, re.M), where,
                 'ENTRYPOINT is not ["dhow", "serve"]')
    report.check(re.search(r"^EXPOSE 50051 50052\b", text, re.M), where,
                 "does not EXPOSE 50051 50052")
    if help_ and help_.text(list(SERVE[1:])) is not None:
        known = help_.flags(list(SERVE[1:]))
        for var in re.findall(r"\bDHOW_([A-Z0-9_]+)=", text):
            flag = var.lower().replace("_", "-")
            report.flags_checked += 1
            report.check(flag in known, where,
                         f"ENV DHOW_{var}: `dhow serve` has no flag --{flag}")


# ---------------------------------------------------------------- main and self-test


def run(args):
    report = Report()
    help_ = None
    if args.dhow:
        if not (os.path.isfile(args.dhow) and os.access(args.dhow, os.X_OK)):
            report.error(args.dhow, "the dhow binary does not exist (build it with "
                                    "`cargo build -p dhow`, or pass its path as check.sh's "
                                    "first argument); flags were not checked")
        else:
            help_ = Help(args.dhow)
            report.check(help_.text(list(SERVE[1:])) is not None, args.dhow,
                         "`serve --help` failed")
    check_compose(report, help_, args.compose)
    k8s_files = sorted(os.path.join(args.kubernetes, f) for f in os.listdir(args.kubernetes)
                       if f.endswith((".yaml", ".yml")))
    check_kubernetes(report, help_, os.path.relpath(args.kubernetes), load_docs(k8s_files), 3)
    for spec in args.rendered or []:
        replicas, path = spec.split(":", 1)
        check_kubernetes(report, help_, f"{args.chart} rendered with replicaCount={replicas}",
                         load_docs([path]), int(replicas), namespace=args.namespace)
    check_dockerfile(report, help_, args.dockerfile)
    return report


def self_test():
    """Runs the flag checker against stand-in binaries: one whose help has every flag the
    files use (no error expected), one that lacks --peer-addr (errors naming it expected)."""
    here = os.path.dirname(os.path.abspath(__file__))
    options = """Options:
      --config <FILE>                Configuration file (TOML)
      --node-id <N>                  This node's id
      --data-dir <DIR>               Where the node keeps its data
      --grpc-addr <HOST:PORT>        Address of the public gRPC API
      --peer-addr <HOST:PORT>        Address of the node-to-node API
      --initial-cluster <MEMBERS>    ID=HOST:PORT,...
      --initial-cluster-state <S>    new or existing
      --metrics-addr <HOST:PORT>     Prometheus metrics over HTTP
  -h, --help                         Print help"""
    fake = """#!/bin/sh
case "$*" in
  "--help") printf 'Usage: dhow <COMMAND>\\n\\nCommands:\\n  serve   Run\\n  cluster  Members\\n  health  Health\\n\\nOptions:\\n  -h, --help  Print help\\n' ;;
  "health --help") printf 'Options:\\n      --endpoint <URL>  Server\\n      --service <S>  Entry\\n  -h, --help  Print help\\n' ;;
  "cluster --help") printf 'Commands:\\n  status  Show\\n\\nOptions:\\n  -h, --help  Print help\\n' ;;
  "cluster status --help") printf 'Options:\\n      --endpoint <URL>  Server\\n  -h, --help  Print help\\n' ;;
  "serve --help") cat "$(dirname "$0")/serve.txt" ;;
  *) echo "error: unexpected $*" >&2; exit 2 ;;
esac
"""
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        binary = os.path.join(tmp, "dhow")
        with open(binary, "w") as f:
            f.write(fake)
        os.chmod(binary, 0o755)
        ns = argparse.Namespace(
            dhow=binary, compose=os.path.join(here, "docker-compose.yml"),
            kubernetes=os.path.join(here, "kubernetes"),
            dockerfile=os.path.join(here, "Dockerfile"), rendered=[], namespace="NAMESPACE",
            chart="")
        for lacking in (None, "peer-addr"):
            with open(os.path.join(tmp, "serve.txt"), "w") as f:
                f.write("\n".join(l for l in options.splitlines()
                                  if not (lacking and f"--{lacking} " in l)) + "\n")
            report = run(ns)
            flag_errors = [e for e in report.errors if "flag --" in e]
            if lacking is None:
                if report.errors:
                    failures.append("with every flag known: " + "; ".join(report.errors))
                if report.flags_checked < 20:
                    failures.append(f"only {report.flags_checked} flags were checked")
            else:
                for f in ("docker-compose.yml", "kubernetes", "Dockerfile"):
                    if not any(f in e and f"--{lacking}" in e for e in flag_errors):
                        failures.append(f"lacking --{lacking}: no error names {f}")
                if any(f"--{lacking}" not in e for e in flag_errors):
                    failures.append(f"lacking --{lacking}: errors about other flags: "
                                    + "; ".join(flag_errors))
    for f in failures:
        print(f"self-test failed: {f}")
    print("flag checker self-test: " + ("ok" if not failures else "FAILED"))
    return 1 if failures else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--self-test", action="store_true")
    ap.add_argument("--dhow")
    ap.add_argument("--compose")
    ap.add_argument("--kubernetes")
    ap.add_argument("--dockerfile")
    ap.add_argument("--rendered", action="append", metavar="REPLICAS:FILE")
    ap.add_argument("--chart", default="deploy/helm/dhow",
                    help="the chart the --rendered files come from (for messages)")
    ap.add_argument("--namespace", default="NAMESPACE",
                    help="the namespace the --rendered files were rendered for")
    args = ap.parse_args()
    if args.self_test:
        return self_test()
    if not (args.compose and args.kubernetes and args.dockerfile):
        ap.error("--compose, --kubernetes and --dockerfile are required")
    report = run(args)
    for n in report.notes:
        print(f"checked {n}")
    for e in report.errors:
        print(f"error: {e}")
    print(f"{report.invocations} dhow command lines, {report.flags_checked} flags checked, "
          f"{len(report.errors)} problems")
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
