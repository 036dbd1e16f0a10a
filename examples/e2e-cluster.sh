#!/usr/bin/env bash
# End-to-end check of the three-node compose cluster (docker/compose.yaml), as CI runs it:
#   build the image with no registry (docker/build-image), start the cluster under a unique compose project,
#   create a job on node 1 and wait until all three nodes report it complete, run a long-running container
#   until every node reports it running, stop it and see it cancelled everywhere, read a job's logs through
#   node 3, then tear everything down: nodes, network, volumes and every job container the nodes started.
#
# Prints each check as it makes it; on failure prints the nodes' logs and exits non-zero. Every wait is bounded.
#
# Environment:
#   E2E_MESH=auto|1|0   mesh checks (three executions per job, logs through a peer): auto (default) runs them when
#                       the image has the mesh (node/p2p.py); 1 requires them; 0 checks single-node behaviour only.
#   E2E_PORTS="8080 8081 8082"  host ports for the nodes' RPC (busy ones are replaced by free ones).
#   E2E_TIMEOUT=90      seconds each wait may take.   E2E_KEEP=1  leave the cluster up (debugging).
#   CMNODE_IMAGE        image to build and run (default cmnode:local).
set -euo pipefail
cd "$(dirname "$0")/.."

PROJECT=${E2E_PROJECT:-cmnode-e2e-$(date +%s)-$$}
TIMEOUT=${E2E_TIMEOUT:-90}
MESH=${E2E_MESH:-auto}
export CMNODE_IMAGE=${CMNODE_IMAGE:-cmnode:local}
JOB_IMAGE=cmnode-test/busybox:latest
LONG_IMAGE=nginx:latest # scripts/build-test-images provides a busybox httpd stand-in when there is no real one
T0=$SECONDS
NODE_IDS=()
PORTS=()
SKIPPED=()
CHECKS=0

# Messages go to fd 3 (the script's stdout), so that they show even from inside $(...) substitutions.
exec 3>&1
log() { printf '[e2e %4ss] %s\n' "$((SECONDS - T0))" "$*" >&3; }
ok() { CHECKS=$((CHECKS + 1)); log "ok   $*"; }
skip() { SKIPPED+=("$*"); log "SKIP $*"; }
fail() { log "FAIL $*"; exit 1; }

# --- helpers ---------------------------------------------------------------------------------------------

# rpc PORT METHOD PARAMS_JSON: the JSON-RPC response body (a transport failure is an error).
rpc() {
    curl -sS --max-time 10 -X POST "http://127.0.0.1:$1/jrpc" -H 'Content-Type: application/json' \
        -d "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"$2\",\"params\":$3}"
}

# jq-like access without jq: `json EXPR < body` evaluates EXPR with `r` bound to the parsed JSON.
json() {
    python3 -c '
import json, sys
body = sys.stdin.read()
try:
    r = json.loads(body)
    v = eval(sys.argv[1])
except Exception as exc:
    sys.exit(f"{sys.argv[1]}: {type(exc).__name__} {exc} in: {body[:300]!r}")
print(v if isinstance(v, str) else json.dumps(v))' "$1"
}

# result PORT METHOD PARAMS: the `result` of a call; fails the run on a JSON-RPC error.
result() {
    local body
    body=$(rpc "$@") || fail "$2 on port $1: no answer"
    if [ "$(json '"error" in r' <<<"$body")" = true ]; then
        fail "$2 on port $1 returned an error: $body"
    fi
    json 'r["result"]' <<<"$body"
}

# wait_until DESCRIPTION COMMAND...: runs COMMAND every 0.5 s until it succeeds, at most $TIMEOUT seconds; on
# timeout, fails with COMMAND's last output (which says what it saw instead).
wait_until() {
    local what=$1 deadline=$((SECONDS + TIMEOUT)) out=""
    shift
    until out=$("$@" 2>&1); do
        if [ "$SECONDS" -ge "$deadline" ]; then
            fail "$what: not within ${TIMEOUT}s; last observation: ${out:-none}"
        fi
        sleep 0.5
    done
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port_busy() { python3 -c 'import socket, sys; s = socket.socket(); sys.exit(s.connect_ex(("127.0.0.1", int(sys.argv[1]))) != 0)' "$1"; }

# --- compose and teardown --------------------------------------------------------------------------------

if docker-compose version >/dev/null 2>&1; then
    COMPOSE=(docker-compose)
elif docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)  # v2
elif [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing docker-compose (apt)"
    DEBIAN_FRONTEND=noninteractive docker/apt-get-wait install -y --no-install-recommends docker-compose >/dev/null
    COMPOSE=(docker-compose)
else
    fail "neither docker-compose nor 'docker compose' is available"
fi
COMPOSE_VERSION=$("${COMPOSE[@]}" version --short 2>/dev/null || true)
COMPOSE_COMMAND="${COMPOSE[*]}" # for docker/teardown
COMPOSE+=(-f docker/compose.yaml -p "$PROJECT")

dump_logs() {
    log "---- nodes' logs (last 150 lines each) ----"
    "${COMPOSE[@]}" ps 2>&1 || true
    for service in node1 node2 node3; do
        "${COMPOSE[@]}" logs --no-color --tail 150 "$service" 2>&1 || true
    done
    log "---- job containers ----"
    docker ps -a --filter "label=e2e.project=$PROJECT" \
        --format '{{.ID}} {{.Status}} node={{.Label "cmnode.node_id"}} job={{.Label "cmnode.job_id"}}' || true
}

job_containers() {
    {
        docker ps -aq --filter "label=e2e.project=$PROJECT"
        for id in "${NODE_IDS[@]}"; do
            docker ps -aq --filter "label=cmnode.managed=1" --filter "label=cmnode.node_id=$id"
        done
    } | sort -u
}

teardown() {
    local status=$?
    trap - EXIT INT TERM
    set +e
    if [ "$status" -ne 0 ]; then
        dump_logs
    fi
    if [ "${E2E_KEEP:-0}" = 1 ]; then
        log "E2E_KEEP=1: cluster left up; remove with: COMPOSE=\"$COMPOSE_COMMAND\" docker/teardown -p $PROJECT"
        exit "$status"
    fi
    log "teardown: docker/teardown (nodes, network, volumes, then the nodes' job containers)"
    [ -z "${KEY_DIR:-}" ] || rm -rf "$KEY_DIR"
    # The script a user runs: it finds the nodes' IDs in their volumes, not from this run's NODE_IDS.
    COMPOSE="$COMPOSE_COMMAND" timeout 240 docker/teardown -p "$PROJECT" 2>&1 | sed 's/^/    /' >&3
    local project="label=com.docker.compose.project=$PROJECT" left=""
    left+=$(docker ps -aq --filter "$project")
    left+=$(docker network ls -q --filter "$project")
    left+=$(docker volume ls -q --filter "$project")
    left+=$(job_containers)
    if [ -n "$left" ]; then
        log "FAIL teardown left resources behind: $left"
        [ "$status" -ne 0 ] || status=1
        timeout 120 "${COMPOSE[@]}" down -v --remove-orphans --timeout 10 >/dev/null 2>&1
        job_containers | xargs -r docker rm -f >/dev/null
    else
        log "ok   teardown: no container, network or volume of project $PROJECT left"
    fi
    if [ "$status" -eq 0 ]; then
        log "PASSED: $CHECKS checks in $((SECONDS - T0))s${SKIPPED[*]:+; skipped (mesh not available): ${#SKIPPED[@]}}"
        for s in "${SKIPPED[@]}"; do log "  skipped: $s"; done
    else
        log "FAILED (status $status) after $((SECONDS - T0))s"
    fi
    exit "$status"
}

# --- 1. image and cluster --------------------------------------------------------------------------------

log "project $PROJECT, image $CMNODE_IMAGE, compose $COMPOSE_VERSION"
t=$SECONDS
docker/build-image "$CMNODE_IMAGE" >/dev/null || fail "docker/build-image failed"
ok "image $CMNODE_IMAGE built without a registry ($((SECONDS - t))s)"
if ! docker image inspect "$JOB_IMAGE" >/dev/null 2>&1 || ! docker image inspect "$LONG_IMAGE" >/dev/null 2>&1; then
    scripts/build-test-images || fail "scripts/build-test-images failed"
fi

if [ "$MESH" = auto ]; then
    if docker run --rm --network none --entrypoint python3 "$CMNODE_IMAGE" -c 'import node.p2p' >/dev/null 2>&1; then
        MESH=1
    else
        MESH=0
        log "the image has no mesh (node/p2p.py): mesh-dependent checks are SKIPPED, single-node behaviour checked"
    fi
fi

for want in ${E2E_PORTS:-8080 8081 8082}; do
    if port_busy "$want"; then
        got=$(free_port)
        log "port $want is in use on 127.0.0.1; node $((${#PORTS[@]} + 1)) gets $got instead"
        want=$got
    fi
    PORTS+=("$want")
done
export CMNODE_PORT_1=${PORTS[0]} CMNODE_PORT_2=${PORTS[1]} CMNODE_PORT_3=${PORTS[2]}

# A throwaway private-network key for this run (never the repository's docker/swarm.key, never committed).
KEY_DIR=$(mktemp -d)
export CMNODE_SWARM_KEY_FILE="$KEY_DIR/swarm.key"
docker/swarm-key "$CMNODE_SWARM_KEY_FILE" 2>/dev/null || fail "docker/swarm-key failed"

trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
t=$SECONDS
out=$("${COMPOSE[@]}" up -d 2>&1) || fail "compose up failed: $out"
ok "compose up: node1..3 on 127.0.0.1:${PORTS[*]} ($((SECONDS - t))s)"

node_up() { rpc "$1" NodeService.Info '{}' | json 'r["result"]["node_id"]'; }
for i in 0 1 2; do
    wait_until "node $((i + 1)) answers NodeService.Info on port ${PORTS[$i]}" node_up "${PORTS[$i]}"
    NODE_IDS+=("$(node_up "${PORTS[$i]}")")
done
[ "$(printf '%s\n' "${NODE_IDS[@]}" | sort -u | wc -l)" -eq 3 ] || fail "node IDs are not distinct: ${NODE_IDS[*]}"
if "${COMPOSE[@]}" logs --no-color 2>&1 | grep -q "no swarm key"; then
    fail "a node runs without the swarm key (an open mesh)"
fi
ok "private mesh: every node runs with the run's swarm key"
ok "three nodes up with distinct node IDs: ${NODE_IDS[*]}"

for i in 0 1 2; do
    docker_ok=$(result "${PORTS[$i]}" NodeService.Info '{}' | json 'r["docker"]["ok"]')
    [ "$docker_ok" = true ] || fail "node $((i + 1)) cannot use the mounted Docker socket"
done
ok "each node reaches the host's Docker engine through the mounted socket"

if [ "$MESH" = 1 ]; then
    peers_of() {
        local body
        body=$(rpc "$1" NodeService.Peers '{}') || return 1
        [ "$(json 'len(r["result"]["peers"])' <<<"$body")" -ge 2 ] 2>/dev/null || { echo "$body"; false; }
    }
    for i in 0 1 2; do
        wait_until "node $((i + 1)) sees both other nodes (mDNS)" peers_of "${PORTS[$i]}"
    done
    ok "mesh formed by mDNS: every node has 2 peers"
else
    skip "mesh formed by mDNS (every node sees 2 peers)"
fi

# --- 2. a job created on node 1 completes on every node --------------------------------------------------

# status_is PORT JOB STATE N: the job's status on that node is STATE, with N executions all in STATE, each on a
# distinct node of this cluster.
status_is() {
    local body
    body=$(rpc "$1" ContainerService.Status "{\"job_id\":\"$2\"}") || return 1
    python3 - "$2" "$3" "$4" "${NODE_IDS[*]}" "$body" <<'PY'
import json, sys
job, state, n, nodes, body = sys.argv[1], sys.argv[2], int(sys.argv[3]), set(sys.argv[4].split()), sys.argv[5]
r = json.loads(body).get("result") or {}
ex = r.get("executions", [])
seen = {e["node_id"] for e in ex}
good = r.get("status") == state and len(ex) == n and all(e["state"] == state for e in ex) \
    and len(seen) == n and seen <= nodes
if not good:
    print(json.dumps({"status": r.get("status"), "executions": [(e["node_id"][-6:], e["state"], e.get("error")) for e in ex]} if r else json.loads(body)))
sys.exit(0 if good else 1)
PY
}

EXPECT=$([ "$MESH" = 1 ] && echo 3 || echo 1)
create() { # create PORT SPEC_JSON -> job_id
    result "$1" ContainerService.Create "$2" | json 'r["job_id"]'
}
labels="{\"e2e.project\":\"$PROJECT\"}"
JOB=$(create "${PORTS[0]}" "{\"image\":\"$JOB_IMAGE\",\"arguments\":[\"sh\",\"-c\",\"echo hello from cmnode e2e; echo on-stderr >&2\"],\"env\":{},\"pull\":\"never\",\"labels\":$labels}")
ok "ContainerService.Create on node 1: job $JOB"
if [ "$MESH" = 1 ]; then
    for i in 0 1 2; do
        wait_until "Status on node $((i + 1)) (port ${PORTS[$i]}): job complete on all three nodes" \
            status_is "${PORTS[$i]}" "$JOB" complete 3
        ok "Status on port ${PORTS[$i]}: complete, three executions (one per node), all complete"
    done
else
    wait_until "Status on node 1: job complete" status_is "${PORTS[0]}" "$JOB" complete 1
    ok "Status on port ${PORTS[0]}: complete, one execution (node 1's own)"
    skip "job created on node 1 runs and completes on nodes 2 and 3 (Status on ${PORTS[1]} and ${PORTS[2]} lists three executions)"
fi
# The containers themselves: one per executing node, each labelled with that node's own ID.
labelled=$(docker ps -a --filter "label=cmnode.job_id=$JOB" --format '{{.Label "cmnode.node_id"}}' | sort -u | wc -l)
[ "$labelled" -eq "$EXPECT" ] || fail "expected $EXPECT job containers labelled with distinct node IDs, found $labelled"
ok "$EXPECT job container(s) on the host engine, each labelled cmnode.node_id=<the node that started it>"

# --- 3. a long-running container runs everywhere, then is stopped ----------------------------------------

LONG=$(create "${PORTS[0]}" "{\"image\":\"$LONG_IMAGE\",\"arguments\":[],\"env\":{},\"pull\":\"never\",\"labels\":$labels}")
ok "ContainerService.Create on node 1 ($LONG_IMAGE, stays up): job $LONG"
targets=$([ "$MESH" = 1 ] && echo "0 1 2" || echo 0)
for i in $targets; do
    wait_until "Status on node $((i + 1)): $LONG_IMAGE running" status_is "${PORTS[$i]}" "$LONG" running "$EXPECT"
    ok "Status on port ${PORTS[$i]}: running ($EXPECT execution(s) running)"
done

stop_port=${PORTS[$([ "$MESH" = 1 ] && echo 1 || echo 0)]}
result "$stop_port" ContainerService.Stop "{\"job_id\":\"$LONG\"}" >/dev/null
ok "ContainerService.Stop on port $stop_port"
for i in $targets; do
    wait_until "Status on node $((i + 1)): job cancelled" status_is "${PORTS[$i]}" "$LONG" cancelled "$EXPECT"
    ok "Status on port ${PORTS[$i]}: cancelled ($EXPECT execution(s) cancelled)"
done
running_left() { [ -z "$(docker ps -q --filter "label=cmnode.job_id=$LONG")" ] || { docker ps --filter "label=cmnode.job_id=$LONG" --format '{{.ID}} {{.Status}}'; false; }; }
wait_until "the stopped job's containers are no longer running" running_left
ok "no container of the stopped job is running"
[ "$MESH" = 1 ] || skip "Stop sent to node 2 cancels the job on nodes 1 and 3"

# --- 4. logs through node 3 ------------------------------------------------------------------------------

logs_have_hello() { # PORT PARAMS
    local body
    body=$(rpc "$1" ContainerService.Logs "$2") || return 1
    [ "$(json '"hello from cmnode e2e" in (r.get("result") or {}).get("stdout", "") and "on-stderr" in (r.get("result") or {}).get("stderr", "")' <<<"$body")" = true ] \
        || { echo "$body"; false; }
}
if [ "$MESH" = 1 ]; then
    body=$(rpc "${PORTS[2]}" ContainerService.Logs "{\"job_id\":\"$JOB\",\"node_id\":\"${NODE_IDS[0]}\"}")
    if [ "$(json '"error" in r and "not reachable" in r["error"].get("message", "")' <<<"$body")" = true ]; then
        skip "Logs through node 3 of node 1's execution (the mesh has no logs protocol yet: $body)"
        wait_until "node 3 serves its own execution's logs" logs_have_hello "${PORTS[2]}" "{\"job_id\":\"$JOB\"}"
        ok "ContainerService.Logs on node 3 (its own execution): stdout and stderr of the job"
    else
        wait_until "node 3 serves node 1's logs of job $JOB" logs_have_hello "${PORTS[2]}" \
            "{\"job_id\":\"$JOB\",\"node_id\":\"${NODE_IDS[0]}\"}"
        ok "ContainerService.Logs on node 3 with node 1's node_id: node 1's stdout and stderr, fetched over the mesh"
    fi
else
    skip "Logs through node 3 of node 1's execution (needs the mesh)"
    JOB3=$(create "${PORTS[2]}" "{\"image\":\"$JOB_IMAGE\",\"arguments\":[\"sh\",\"-c\",\"echo hello from cmnode e2e; echo on-stderr >&2\"],\"pull\":\"never\",\"labels\":$labels}")
    wait_until "job $JOB3 complete on node 3" status_is "${PORTS[2]}" "$JOB3" complete 1
    logs_have_hello "${PORTS[2]}" "{\"job_id\":\"$JOB3\"}" || fail "node 3's own logs lack the job's output"
    ok "ContainerService.Logs on node 3 (its own job $JOB3): stdout and stderr of the job"
fi

# --- 5. the examples, against the cluster ----------------------------------------------------------------

out=$(CMNODE_URL="http://127.0.0.1:${PORTS[0]}" CMNODE_URL2="http://127.0.0.1:${PORTS[1]}" timeout 60 examples/curl.sh 2>&1) \
    || fail "examples/curl.sh failed: $out"
for want in '"message":"Job created successfully"' '"message":"Job stop requested"'; do
    grep -qF "$want" <<<"$out" || fail "examples/curl.sh: no $want in its output: $out"
done
ok "examples/curl.sh against node 1: the seed's nginx job created, its status read, then stopped"
out=$(timeout 120 python3 examples/client.py --url "http://127.0.0.1:${PORTS[1]}" --timeout 60 \
    --label "e2e.project=$PROJECT" "$JOB_IMAGE" -- sh -c 'echo hello from client.py' 2>&1) \
    || fail "examples/client.py failed: $out"
grep -q 'stdout: hello from client.py' <<<"$out" || fail "examples/client.py: no job output in: $out"
ok "examples/client.py against node 2: job complete, its output read back"
