#!/usr/bin/env python3
"""The demo's client of its API server (no kubectl needed): server-side apply of YAML files,
a ServiceAccount token, GET/DELETE, and waits. Usage:

    kube.py apply FILE...            apply every document (CRDs first, then the rest)
    kube.py token NS SA              a TokenRequest's token (one hour)
    kube.py get PATH                 GET, JSON on stdout
    kube.py delete PATH              DELETE
    kube.py wait-gone PATH SECONDS   until GET says 404

Environment: KUBE_SERVER (https://ADDR:PORT), KUBE_TOKEN, KUBE_CA (the serving certificate).
"""
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request

import yaml

SERVER = os.environ["KUBE_SERVER"]
TOKEN = os.environ["KUBE_TOKEN"]
CTX = ssl.create_default_context(cafile=os.environ["KUBE_CA"])

# kind -> (API path prefix, plural, namespaced), for the kinds the demo applies.
KINDS = {
    "Namespace": ("/api/v1", "namespaces", False),
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "Secret": ("/api/v1", "secrets", True),
    "Node": ("/api/v1", "nodes", False),
    "Service": ("/api/v1", "services", True),
    "EndpointSlice": ("/apis/discovery.k8s.io/v1", "endpointslices", True),
    "ClusterRole": ("/apis/rbac.authorization.k8s.io/v1", "clusterroles", False),
    "ClusterRoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
    "DaemonSet": ("/apis/apps/v1", "daemonsets", True),
    "CustomResourceDefinition": ("/apis/apiextensions.k8s.io/v1", "customresourcedefinitions", False),
}


def call(method, path, body=None, ctype="application/json"):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(SERVER + path, data=data, method=method)
    req.add_header("Authorization", "Bearer " + TOKEN)
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", ctype)
    with urllib.request.urlopen(req, context=CTX, timeout=10) as r:
        return json.loads(r.read() or b"{}")


def path_of(doc, crds):
    kind = doc["kind"]
    if kind in KINDS:
        prefix, plural, namespaced = KINDS[kind]
    else:
        group, version = doc["apiVersion"].split("/")
        plural, namespaced = crds[(group, kind)]
        prefix = "/apis/%s/%s" % (group, version)
    meta = doc["metadata"]
    ns = "/namespaces/%s" % meta.get("namespace", "default") if namespaced else ""
    return "%s%s/%s/%s" % (prefix, ns, plural, meta["name"])


def apply(files):
    docs = [d for f in files for d in yaml.safe_load_all(open(f)) if d]
    crds = {}
    for d in docs:
        if d["kind"] == "CustomResourceDefinition":
            s = d["spec"]
            crds[(s["group"], s["names"]["kind"])] = (s["names"]["plural"], s["scope"] == "Namespaced")
    docs.sort(key=lambda d: d["kind"] != "CustomResourceDefinition")
    q = "?fieldManager=edgelb-demo&force=true"
    for d in docs:
        if d["kind"] not in KINDS and (d["apiVersion"].split("/")[0], d["kind"]) not in crds:
            # A custom kind whose CRD another file of this call did not bring: look it up.
            group, version = d["apiVersion"].split("/")
            for c in call("GET", KINDS["CustomResourceDefinition"][0] + "/customresourcedefinitions")["items"]:
                s = c["spec"]
                crds[(s["group"], s["names"]["kind"])] = (s["names"]["plural"], s["scope"] == "Namespaced")
        path = path_of(d, crds)
        status = d.pop("status", None) if d["kind"] == "Node" else None
        deadline = time.time() + 20
        while True:
            try:
                call("PATCH", path + q, d, "application/apply-patch+yaml")
                if status is not None:
                    body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": d["metadata"]["name"]}, "status": status}
                    call("PATCH", path + "/status" + q, body, "application/apply-patch+yaml")
                break
            except urllib.error.HTTPError as e:
                # A CRD just created is served a moment later.
                if e.code == 404 and time.time() < deadline:
                    time.sleep(0.2)
                    continue
                sys.exit("apply %s %s: HTTP %d %s" % (d["kind"], d["metadata"]["name"], e.code, e.read().decode()[:300]))
        print("    applied %s %s" % (d["kind"], d["metadata"]["name"]))


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "apply":
        apply(args)
    elif cmd == "token":
        ns, sa = args
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}}
        print(call("POST", "/api/v1/namespaces/%s/serviceaccounts/%s/token" % (ns, sa), body)["status"]["token"])
    elif cmd == "get":
        print(json.dumps(call("GET", args[0])))
    elif cmd == "delete":
        call("DELETE", args[0])
    elif cmd == "wait-gone":
        deadline = time.time() + float(args[1])
        while time.time() < deadline:
            try:
                call("GET", args[0])
            except urllib.error.HTTPError as e:
                if e.code == 404:
                    return
            time.sleep(0.2)
        sys.exit("%s still there after %s s" % (args[0], args[1]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
