# Part 2 of deploy/demo/run.sh (sourced by it; uses its lab, helpers and cleanup): ONE Service
# in two regions, as in the ACK Edge ELB document (seed 000), against a real API server.
#
#   client --- router (FRR) --- LAN 192.0.2.0/24 --+-- node-a .11, node-b .12  node pool np-hefei:
#                  |                               |     speakers as deployed, BGP to the router
#                  | 10.98.0.0/24 via .50          +-- node-c .21              node pool np-chengdu:
#                  |                               |     ENS instance behind the emulated ELB
#                  +-------------------------------+-- cloud .50: edgelb-ens-emulator (ENS API on
#                                                  |     :8080, EIPs and their listeners here)
#                                                  +-- ctl .100: etcd + kube-apiserver
#
# The Service (class edgelb.io/speaker) selects both pools by label; np-chengdu carries
# `edgelb.io/cloud-load-balancer-class: alibabacloud.com/elb`. The speakers run with the shipped
# DaemonSet's arguments, the shipped ServiceAccount's token and RBAC, plus the cloud flags; the
# Lease holder creates the ELB, listener, backend and EIP through the signed ENS API and writes
# both addresses into the Service's status.

CTL_IP=192.0.2.100
CLOUD_IP=192.0.2.50
NODE_C_IP=192.0.2.21
HEFEI_IP=198.51.100.20
NODE_PORT=30080
EIP_POOL=10.98.0.0/24
LB_POOL=10.99.0.0/24
K8S_BIN=$(bash .ci/k8s bin)
t_part2=$SECONDS

step "11. part 2: one Service, two regions; stop part 1's speakers and web servers"
for n in a b; do kill "${SPK[$n]}" "${WEB[$n]}" 2>/dev/null || true; done
for n in a b; do
    for _ in $(seq 50); do kill -0 "${SPK[$n]}" 2>/dev/null || break; sleep 0.1; done
done
ok "part 1's processes stopped (by pid)"

step "12. control plane: etcd + kube-apiserver $("$K8S_BIN/kube-apiserver" --version | awk '{print $2}') in namespace $P-ctl ($CTL_IP)"
for ns in ctl cloud node-c; do
    ip netns del "$P-$ns" 2>/dev/null || true
    ip netns add "$P-$ns"
    ip -n "$P-$ns" link set lo up
done
attach ctl eth0 $CTL_IP/24
attach cloud eth0 $CLOUD_IP/24
attach node-c eth0 $NODE_C_IP/24
for ns in ctl cloud node-c; do ip -n "$P-$ns" route add default via 192.0.2.1; done
K=$WORK/k8s
mkdir -p "$K"
KUBE_TOKEN=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
openssl genrsa -out "$K/sa.key" 2048 2>/dev/null
openssl rsa -in "$K/sa.key" -pubout -out "$K/sa.pub" 2>/dev/null
# A CA and the API server's serving certificate signed by it (rustls refuses a self-signed
# CA certificate as a server's own).
EC=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
openssl req -x509 -days 1 -subj /CN=edgelb-demo-ca "${EC[@]}" -keyout "$K/ca.key" -out "$K/ca.crt" 2>/dev/null
openssl req -subj /CN=edgelb-demo-apiserver "${EC[@]}" -keyout "$K/serving.key" -out "$K/serving.csr" 2>/dev/null
printf 'subjectAltName=IP:%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' \
    $CTL_IP >"$K/serving.ext"
openssl x509 -req -in "$K/serving.csr" -CA "$K/ca.crt" -CAkey "$K/ca.key" -CAcreateserial -days 1 \
    -extfile "$K/serving.ext" -out "$K/serving.crt" 2>/dev/null
echo "$KUBE_TOKEN,admin,admin,system:masters" >"$K/tokens.csv"
ip netns exec "$P-ctl" "$K8S_BIN/etcd" --data-dir "$K/etcd" --unsafe-no-fsync \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster default=http://127.0.0.1:2380 >"$WORK/etcd.log" 2>&1 &
PIDS+=("$!"); disown "$!"
ip netns exec "$P-ctl" "$K8S_BIN/kube-apiserver" --etcd-servers http://127.0.0.1:2379 \
    --bind-address $CTL_IP --advertise-address $CTL_IP --secure-port 6443 \
    --tls-cert-file "$K/serving.crt" --tls-private-key-file "$K/serving.key" \
    --token-auth-file "$K/tokens.csv" --authorization-mode RBAC \
    --service-account-issuer https://kubernetes.default.svc --service-account-key-file "$K/sa.pub" \
    --service-account-signing-key-file "$K/sa.key" --service-cluster-ip-range 10.96.0.0/16 \
    --enable-priority-and-fairness=false --endpoint-reconciler-type=none >"$WORK/apiserver.log" 2>&1 &
PIDS+=("$!"); disown "$!"
export KUBE_SERVER=https://$CTL_IP:6443 KUBE_TOKEN KUBE_CA=$K/ca.crt
kube() { ip netns exec "$P-ctl" python3 deploy/demo/kube.py "$@"; }
t=$(now_ms)
for _ in $(seq 600); do
    ip netns exec "$P-ctl" curl -sf -m 1 --cacert "$K/ca.crt" -H "Authorization: Bearer $KUBE_TOKEN" \
        "$KUBE_SERVER/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done
kube get /api/v1/namespaces/default >/dev/null || die "the API server is not ready after 60 s"
ok "API server https://$CTL_IP:6443 ready after $(($(now_ms) - t)) ms"

step "13. what an operator applies: CRDs, deploy/manifests (namespace, RBAC, DaemonSet), then the objects"
kube apply deploy/crds/*.yaml tests/fixtures/apps.openyurt.io_nodepools.yaml deploy/manifests/*.yaml |
    awk '{k[$2]++} END {for (x in k) printf "%s %s, ", k[x], x; print ""}' | sed 's/, $//; s/^/    applied: /'
ENS_REGION=cn-chengdu-telecom
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$WORK/ens-secret"
cat >"$WORK/regions.yaml" <<YAML
apiVersion: v1
kind: Secret
metadata: {name: edgelb-memberlist, namespace: edgelb-system}
stringData: {key: "$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"}
---
# The ENS AccessKey the speakers' cloud driver signs with (never logged).
apiVersion: v1
kind: Secret
metadata: {name: edgelb-ens-credentials, namespace: edgelb-system}
stringData: {accessKeyID: demo-access-key, accessKeySecret: "$(cat "$WORK/ens-secret")"}
---
apiVersion: apps.openyurt.io/v1beta1
kind: NodePool
metadata: {name: np-hefei, labels: {k8s-svc: cube}}
spec: {type: Edge}
---
apiVersion: apps.openyurt.io/v1beta1
kind: NodePool
metadata:
  name: np-chengdu
  labels: {k8s-svc: cube}
  annotations:
    edgelb.io/cloud-load-balancer-class: alibabacloud.com/elb
    alibabacloud.com/ens-region-id: $ENS_REGION
    alibabacloud.com/ens-network-id: n-demo1
    alibabacloud.com/ens-vswitch-id: vsw-demo1
spec: {type: Edge}
---
apiVersion: v1
kind: Node
metadata: {name: node-a, labels: {apps.openyurt.io/nodepool: np-hefei}}
status: {addresses: [{type: InternalIP, address: 192.0.2.11}], conditions: [{type: Ready, status: "True", reason: KubeletReady, message: demo}]}
---
apiVersion: v1
kind: Node
metadata: {name: node-b, labels: {apps.openyurt.io/nodepool: np-hefei}}
status: {addresses: [{type: InternalIP, address: 192.0.2.12}], conditions: [{type: Ready, status: "True", reason: KubeletReady, message: demo}]}
---
apiVersion: v1
kind: Node
metadata: {name: node-c, labels: {apps.openyurt.io/nodepool: np-chengdu}}
spec: {providerID: $ENS_REGION.i-chengdu1}
status: {addresses: [{type: InternalIP, address: $NODE_C_IP}], conditions: [{type: Ready, status: "True", reason: KubeletReady, message: demo}]}
---
apiVersion: edgelb.io/v1alpha1
kind: IPAddressPool
metadata: {name: hefei, namespace: edgelb-system}
spec: {addresses: ["$HEFEI_IP/32"], nodePools: [np-hefei]}
---
$(peer_yaml hefei '{ipAddressPools: [hefei]}')
---
apiVersion: v1
kind: Service
metadata:
  name: cube-svc
  namespace: default
  annotations:
    service.openyurt.io/nodepool-labelselector: k8s-svc=cube
spec:
  type: LoadBalancer
  loadBalancerClass: edgelb.io/speaker
  selector: {app: cube}
  ports: [{name: cube, port: 80, protocol: TCP, targetPort: 80, nodePort: $NODE_PORT}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: cube-svc-1, namespace: default, labels: {kubernetes.io/service-name: cube-svc}}
addressType: IPv4
ports: [{name: cube, port: 80, protocol: TCP}]
endpoints:
  - {addresses: ["10.244.1.7"], nodeName: node-a, conditions: {ready: true}}
  - {addresses: ["10.244.2.7"], nodeName: node-b, conditions: {ready: true}}
  - {addresses: ["10.244.3.7"], nodeName: node-c, conditions: {ready: true}}
YAML
kube apply "$WORK/regions.yaml" | sed 's/^ *applied //' | paste -sd, | sed 's/,/, /g; s/^/    applied: /'
ok "NodePools np-hefei (BGP) and np-chengdu (behind alibabacloud.com/elb), both labelled k8s-svc=cube; Service default/cube-svc selects them"

step "14. the cloud: edgelb-ens-emulator in $P-cloud (signed ENS API on $CLOUD_IP:8080, EIPs in $EIP_POOL)"
ip -n "$P-cloud" route add local $EIP_POOL dev lo
ip -n "$P-cloud" route add local $LB_POOL dev lo
ip -n "$P-router" route add $EIP_POOL via $CLOUD_IP
ip netns exec "$P-cloud" env RUST_LOG=info NO_COLOR=1 "$BIN/edgelb-ens-emulator" --listen $CLOUD_IP:8080 \
    --access-key-id demo-access-key --access-key-secret-file "$WORK/ens-secret" \
    --eip-pool $EIP_POOL --lb-pool $LB_POOL --dataplane-netns "$P-cloud" \
    --leak-report "$WORK/leak.json" >"$WORK/emulator.out" 2>"$WORK/emulator.log" &
EMU=$!; PIDS+=("$EMU"); disown "$EMU"
for _ in $(seq 100); do grep -q listening "$WORK/emulator.out" 2>/dev/null && break; sleep 0.1; done
grep -q listening "$WORK/emulator.out" || die "the emulator did not start"
emu() { ip netns exec "$P-cloud" curl -sf -m 5 "$@"; }
# The ENS instance of node-c (what the cloud knows about its own machines).
emu -X POST -d "[{\"InstanceId\": \"i-chengdu1\", \"Ip\": \"$NODE_C_IP\"}]" http://$CLOUD_IP:8080/control/instances >/dev/null
ok "emulator pid $EMU; ENS instance i-chengdu1 = node-c $NODE_C_IP"

step "15. the application: a web server per region (node-a/b on $HEFEI_IP:80, node-c on NodePort $NODE_PORT)"
for n in a b; do
    ip -n "$P-node-$n" addr add $HEFEI_IP/32 dev lo
    mkdir -p "$WORK/cube-$n" && echo "hello from region hefei (node-$n, announced by BGP)" >"$WORK/cube-$n/index.html"
    ip netns exec "$P-node-$n" python3 -m http.server 80 --bind $HEFEI_IP \
        --directory "$WORK/cube-$n" >"$WORK/cube-$n.log" 2>&1 &
    PIDS+=("$!"); disown "$!"
done
mkdir -p "$WORK/cube-c" && echo "hello from region chengdu (node-c, through the ENS ELB)" >"$WORK/cube-c/index.html"
ip netns exec "$P-node-c" python3 -m http.server $NODE_PORT --directory "$WORK/cube-c" >"$WORK/cube-c.log" 2>&1 &
PIDS+=("$!"); disown "$!"
ok "web servers started"

step "16. speakers on node-a and node-b as the DaemonSet runs them (its args, the edgelb-speaker ServiceAccount's token) + the cloud flags"
SA_TOKEN=$(kube token edgelb-system edgelb-speaker)
ELB_ARGS=(--elb-credentials-secret=edgelb-ens-credentials --elb-endpoint=http://$CLOUD_IP:8080
    --elb-cluster=edgelb-demo --elb-resync-seconds=5)
declare -A SPK2
for n in a b; do
    addr=192.0.2.1$([ $n = a ] && echo 1 || echo 2)
    cat >"$K/kubeconfig-$n" <<KC
apiVersion: v1
kind: Config
clusters: [{name: demo, cluster: {server: "https://$CTL_IP:6443", certificate-authority: "$K/ca.crt"}}]
users: [{name: speaker, user: {token: "$SA_TOKEN"}}]
contexts: [{name: demo, context: {cluster: demo, user: speaker}}]
current-context: demo
KC
    # The container's args from deploy/manifests/20-speaker.yaml, $(VAR) filled in as the
    # kubelet does; the socket moves from the hostPath /run/edgelb to the work directory.
    mapfile -t args < <(NODE_NAME=node-$n NODE_IP=$addr POD_NAMESPACE=edgelb-system SOCK="$WORK/k-node-$n.sock" python3 -c '
import os, re, yaml
ds = [d for d in yaml.safe_load_all(open("deploy/manifests/20-speaker.yaml")) if d and d["kind"] == "DaemonSet"][0]
for a in ds["spec"]["template"]["spec"]["containers"][0]["args"]:
    a = re.sub(r"\$\((\w+)\)", lambda m: os.environ[m.group(1)], a)
    print("--socket=" + os.environ["SOCK"] if a.startswith("--socket=") else a)')
    ip netns exec "$P-node-$n" env RUST_LOG=info NO_COLOR=1 KUBECONFIG="$K/kubeconfig-$n" \
        "$BIN/edgelb-speaker" "${args[@]}" "${ELB_ARGS[@]}" >"$WORK/k-speaker-$n.log" 2>&1 &
    SPK2[$n]=$!; PIDS+=("$!"); disown "$!"
    echo "    node-$n: pid ${SPK2[$n]}: edgelb-speaker ${args[*]} ${ELB_ARGS[*]}"
done

step "17. the Service's status lists both regions' addresses (the EIP of the ELB, the BGP IP)"
ingress() { kube get /api/v1/namespaces/default/services/cube-svc |
    python3 -c 'import json,sys; s=json.load(sys.stdin); print(" ".join(i.get("ip","") for i in (s.get("status",{}).get("loadBalancer",{}).get("ingress") or [])))'; }
t=$(now_ms)
ips=""
for _ in $(seq 600); do
    ips=$(ingress 2>/dev/null || true)
    [ "$(wc -w <<<"$ips")" = 2 ] && break
    sleep 0.1
done
[ "$(wc -w <<<"$ips")" = 2 ] || die "the Service's status.loadBalancer.ingress is [$ips] after 60 s"
EIP=$(tr ' ' '\n' <<<"$ips" | grep -v "^$HEFEI_IP$" || true)
[ -n "$EIP" ] && grep -qw "$HEFEI_IP" <<<"$ips" || die "ingress [$ips]: want $HEFEI_IP and an EIP"
ok "both addresses after $(($(now_ms) - t)) ms: EXTERNAL-IP $(tr ' ' ',' <<<"$ips")"
echo "${B}--- curl $KUBE_SERVER/api/v1/namespaces/default/services/cube-svc (status)${N}"
kube get /api/v1/namespaces/default/services/cube-svc | python3 -c '
import json, sys
s = json.load(sys.stdin)
print(json.dumps({"status": s["status"], "finalizers": s["metadata"].get("finalizers")}, indent=2))' | sed 's/^/    /'
echo "${B}--- the PoolServices (one per selected node pool)${N}"
kube get /apis/network.openyurt.io/v1alpha1/namespaces/default/poolservices | python3 -c '
import json, sys
for p in json.load(sys.stdin)["items"]:
    st = p.get("status") or {}
    ing = ",".join(i.get("ip", "") for i in (st.get("loadBalancer", {}).get("ingress") or []))
    c = next((c for c in st.get("conditions", []) if c["type"] == "edgelb.io/AddressAssigned"), {})
    print("%-22s ingress=%-14s finalizers=%s\n    %s %s: %s" % (p["metadata"]["name"], ing,
          ",".join(p["metadata"].get("finalizers") or []) or "-", c.get("status"), c.get("reason"), c.get("message")))' |
    sed 's/^/    /'

step "18. the router learns $HEFEI_IP/32 from node-a and node-b (the EIP is the cloud's, routed to it)"
t=$(now_ms)
for _ in $(seq 300); do
    n=$(vtysh "show bgp ipv4 unicast $HEFEI_IP/32 json" 2>/dev/null |
        python3 -c 'import json,sys
try: print(len(json.load(sys.stdin).get("paths",[])))
except Exception: print(0)')
    [ "$n" = 2 ] && break
    sleep 0.1
done
[ "$n" = 2 ] || die "router has $n paths for $HEFEI_IP/32 after 30 s"
ok "2 paths after $(($(now_ms) - t)) ms"
vtysh "show bgp ipv4 unicast" | sed 's/^/    /'

step "19. the client reaches both entry points of the one Service"
reach() { # url want
    local r=""
    for _ in $(seq 100); do
        r=$(ip netns exec "$P-client" curl -s -m 1 "$1" || true)
        grep -q "$2" <<<"$r" && break
        sleep 0.1
    done
    grep -q "$2" <<<"$r" || die "client -> $1: \"$r\", want \"$2\""
    ok "client -> $1: \"$r\""
}
reach "http://$HEFEI_IP/" "region hefei"
reach "http://$EIP/" "region chengdu"

step "20. what the emulated cloud holds, and the speakers' view of it"
emu http://$CLOUD_IP:8080/control/inventory | python3 -c '
import json, sys
inv = json.load(sys.stdin)
for lb in inv.get("LoadBalancers", []):
    print("ELB %s %r %s %s, address %s, network %s/%s" % (lb["LoadBalancerId"], lb["LoadBalancerName"],
          lb["EnsRegionId"], lb["LoadBalancerStatus"], lb["Address"], lb["NetworkId"], lb["VSwitchId"]))
    print("  listeners: %s" % ", ".join(lb.get("Listeners", [])))
    print("  backends (instance: weight): %s" % ", ".join("%s: %s" % kv for kv in lb.get("BackendServers", {}).items()))
for e in inv.get("EipAddresses", []):
    print("EIP %s %s %r %s, bound to %s" % (e["AllocationId"], e["IpAddress"], e["Name"], e["State"], e["InstanceId"]))' | sed 's/^/    /'
for n in a b; do
    for _ in $(seq 50); do
        "$BIN/edgelbctl" --socket "$WORK/k-node-$n.sock" elb 2>/dev/null | grep -q k8s/ && break
        "$BIN/edgelbctl" --socket "$WORK/k-node-$n.sock" elb 2>/dev/null | grep -qi "not the leader\|inactive" && break
        sleep 0.1
    done
done
for n in a b; do
    echo "${B}--- node-$n: edgelbctl elb -o wide / announcements${N}"
    "$BIN/edgelbctl" --socket "$WORK/k-node-$n.sock" elb -o wide 2>&1 | sed 's/^/    /' || true
    "$BIN/edgelbctl" --socket "$WORK/k-node-$n.sock" announcements 2>&1 | sed 's/^/    /' || true
done

step "21. the Service is deleted: its ELB and EIP are released, then the PoolServices and the Service go"
t=$(now_ms)
kube delete /api/v1/namespaces/default/services/cube-svc
kube wait-gone /api/v1/namespaces/default/services/cube-svc 60 || die "the Service was not released"
left=$(emu http://$CLOUD_IP:8080/control/inventory | python3 -c '
import json, sys
inv = json.load(sys.stdin)
print(len(inv.get("LoadBalancers", [])) + len(inv.get("EipAddresses", [])))')
[ "$left" = 0 ] || die "the emulator still holds $left resources after the Service is gone"
ok "Service, PoolServices, ELB and EIP gone after $(($(now_ms) - t)) ms; the emulator holds nothing"

printf '\n%spart 2 (two regions, one Service) took %d s%s\n' "$G" "$((SECONDS - t_part2))" "$N"
