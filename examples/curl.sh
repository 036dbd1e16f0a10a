#!/usr/bin/env bash
# The original service's README, as a script: create the seed's nginx job with curl, ask for its status (on this
# node and, with a second node, on that one too), then the calls cmnode adds: list, logs, stop, node info, peers.
#
#   examples/curl.sh                                    # a node at http://localhost:8080
#   CMNODE_URL=http://localhost:8081 examples/curl.sh   # another node
#   CMNODE_URL2=http://localhost:8081 examples/curl.sh  # also ask a second node for the status, as the seed did
#
# Needs only curl. The job's container is stopped at the end (nginx would otherwise keep running); Stop is
# asynchronous, so the script waits for the job's status to become final before it shows it.
set -euo pipefail

URL=${CMNODE_URL:-http://localhost:8080}
URL2=${CMNODE_URL2:-}

show() { printf '\n# %s\n' "$*"; }

# The seed README's create request, byte for byte.
show "ContainerService.Create on $URL"
created=$(curl -sS --max-time 10 -X POST "$URL/jrpc" \
-H "Content-Type: application/json" \
-d '{
    "jsonrpc": "2.0",
    "method": "ContainerService.Create",
    "params": [{
        "image": "nginx",
        "arguments": [],
        "env": {}
    }],
    "id": 1
}')
echo "$created"
job_id=$(sed -n 's/.*"job_id":"\([^"]*\)".*/\1/p' <<<"$created")
if [ -z "$job_id" ]; then
    echo "curl.sh: no job_id in the answer above" >&2
    exit 1
fi

status() {
    show "ContainerService.Status on $1"
    curl -sS --max-time 10 -X POST "$1/jrpc" \
    -H "Content-Type: application/json" \
    -d '{
        "jsonrpc": "2.0",
        "method": "ContainerService.Status",
        "params": [{"job_id":"'"$job_id"'"}],
        "id": 1
    }'
    echo
}
status "$URL"

# Give the container a moment to start (at most 20 s), so that the calls below have something to show.
for _ in $(seq 40); do
    curl -sS --max-time 10 -X POST "$URL/jrpc" -H "Content-Type: application/json" \
        -d '{"jsonrpc": "2.0", "method": "ContainerService.Status", "params": {"job_id": "'"$job_id"'"}, "id": 1}' \
        | grep -q '"status":"pending"\|"status":"pulling"' || break
    sleep 0.5
done
status "$URL"
[ -z "$URL2" ] || status "$URL2"

# Beyond the seed: the same request shape, params by name.
call() { # call METHOD PARAMS_JSON
    show "$1 on $URL"
    curl -sS --max-time 10 -X POST "$URL/jrpc" -H "Content-Type: application/json" \
        -d '{"jsonrpc": "2.0", "method": "'"$1"'", "params": '"$2"', "id": 1}'
    echo
}
call ContainerService.List '{"limit": 3}'
call ContainerService.Logs '{"job_id": "'"$job_id"'", "tail": 5}'
call ContainerService.Stop '{"job_id": "'"$job_id"'"}'
# Stop is asynchronous: it answers once the cancel is recorded and sent to every node; each node then stops its
# container and reports "cancelled". A Status read at once can still say "running" (a node not done yet), so wait
# (at most 30 s) until the job's status is final.
printf '\n# Stop is asynchronous: waiting (at most 30 s) until the job is no longer pending, pulling or running\n'
for _ in $(seq 60); do
    curl -sS --max-time 10 -X POST "$URL/jrpc" -H "Content-Type: application/json" \
        -d '{"jsonrpc": "2.0", "method": "ContainerService.Status", "params": {"job_id": "'"$job_id"'"}, "id": 1}' \
        | grep -q '"status":"pending"\|"status":"pulling"\|"status":"running"' || break
    sleep 0.5
done
status "$URL"
call NodeService.Info '{}'
call NodeService.Peers '{}'
