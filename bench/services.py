#!/usr/bin/env python3
"""Writes the standalone YAML of the steady-state bench (bench/steady.sh): one /16 pool
(198.18.0.0/16), one BGPPeer (192.0.2.1, AS 64500; the speaker is AS 64512), one
BGPAdvertisement, Node NODE (InternalIP ADDR), and N LoadBalancer Services s0..s{N-1} in
namespace `bench`, each with one EndpointSlice holding a ready endpoint on NODE.

  services.py yaml N NODE ADDR        the whole file on stdout
  services.py json N NODE              the N Services and slices as one JSON list (cluster
                                       mode: `kubectl create -f` takes a v1 List)
"""
import json
import sys

CLASS = "edgelb.io/speaker"


def service(i):
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": f"s{i}", "namespace": "bench"},
        "spec": {
            "type": "LoadBalancer",
            "loadBalancerClass": CLASS,
            "ports": [{"port": 80, "protocol": "TCP"}],
        },
    }


def slice_of(i, node):
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"s{i}-1",
            "namespace": "bench",
            "labels": {"kubernetes.io/service-name": f"s{i}"},
        },
        "addressType": "IPv4",
        "endpoints": [
            {
                "addresses": [f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"],
                "nodeName": node,
                "conditions": {"ready": True},
            }
        ],
        "ports": [{"port": 80, "protocol": "TCP"}],
    }


def yaml(n, node, addr):
    out = sys.stdout
    out.write(
        f"""apiVersion: edgelb.io/v1alpha1
kind: IPAddressPool
metadata: {{name: bench, namespace: edgelb-system}}
spec: {{addresses: ["198.18.0.0/16"]}}
---
apiVersion: edgelb.io/v1alpha1
kind: BGPPeer
metadata: {{name: router, namespace: edgelb-system}}
spec: {{myASN: 64512, peerASN: 64500, peerAddress: "192.0.2.1"}}
---
apiVersion: edgelb.io/v1alpha1
kind: BGPAdvertisement
metadata: {{name: all, namespace: edgelb-system}}
spec: {{}}
---
apiVersion: v1
kind: Node
metadata: {{name: {node}}}
status: {{addresses: [{{type: InternalIP, address: "{addr}"}}], conditions: [{{type: Ready, status: "True"}}]}}
"""
    )
    # JSON is YAML: one flow document per object keeps the file quick to write and read.
    for i in range(n):
        out.write("---\n" + json.dumps(service(i)) + "\n")
        out.write("---\n" + json.dumps(slice_of(i, node)) + "\n")


def main():
    if len(sys.argv) >= 5 and sys.argv[1] == "yaml":
        yaml(int(sys.argv[2]), sys.argv[3], sys.argv[4])
    elif len(sys.argv) >= 4 and sys.argv[1] == "json":
        n, node = int(sys.argv[2]), sys.argv[3]
        items = []
        for i in range(n):
            items += [service(i), slice_of(i, node)]
        json.dump({"apiVersion": "v1", "kind": "List", "items": items}, sys.stdout)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
