#!/usr/bin/env bash
# Start a local multi-node Ray cluster on this machine: one head node and N worker
# nodes, each with its own raylet, CPUs, custom resource {"node_<i>": 1} and ports.
# Every server of the cluster listens on 127.0.0.1 only (--bind network: on this
# machine's network address, for workers on other machines); the dashboard listens on
# 127.0.0.1 either way.
# Token authentication stays on. The cluster lives in its own Ray temp dir (--dir),
# so two clusters, or a cluster and an embedded `ray.init()`, do not clash, and
# cluster/local/stop.sh --dir DIR stops exactly this cluster.
#
# Usage: cluster/local/start.sh [options]   (cluster/local/start.sh --help)
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: cluster/local/start.sh [options]

Start a Ray head node and N worker nodes on this machine (for development, CI and
fault-tolerance tests; one machine plays a whole cluster).

Options (environment variable in brackets):
  --workers N          worker nodes (default 2) [WARMTUNE_CLUSTER_WORKERS]
  --cpus-per-worker C  CPUs of each worker node (default 1) [WARMTUNE_CLUSTER_WORKER_CPUS]
  --head-cpus H        CPUs of the head node (default 0: trials run on workers only,
                       the job driver still runs on the head) [WARMTUNE_CLUSTER_HEAD_CPUS]
  --port P             GCS port of the head, the cluster address (default 6390)
                       [WARMTUNE_CLUSTER_PORT]
  --dashboard-port D   dashboard and Jobs API on 127.0.0.1:D (default 8265)
                       [WARMTUNE_CLUSTER_DASHBOARD_PORT]
  --base-port B        first of the per-node ports: node i (0 = head) uses B+10*i ..
                       B+10*i+6 (node manager, object manager, dashboard agent http
                       and grpc, runtime env agent, metrics export, and on the head
                       the Ray client server, then the dashboard's and the
                       autoscaler's metrics at B+7 and B+8); default 21000
                       [WARMTUNE_CLUSTER_BASE_PORT]
  --dir DIR            Ray temp dir of the head node; worker node i uses DIR/w<i>. At
                       most 40 characters, because Ray puts Unix sockets under it
                       (default /tmp/wt-cluster) [WARMTUNE_CLUSTER_DIR]
  --object-store-mb M  object store of each node in MiB (default 200)
                       [WARMTUNE_CLUSTER_OBJECT_STORE_MB]
  --bind loopback|network
                       where the nodes' servers listen: loopback (default) keeps
                       every port of the cluster on 127.0.0.1, so nothing is reachable
                       from another machine; network is Ray's own behaviour, the
                       GCS, raylets and agents on all interfaces and this machine's
                       address, for worker nodes on other machines (firewall them:
                       docs/cluster.md) [WARMTUNE_CLUSTER_BIND]
  --rejoin I           start worker node I of the running cluster in --dir again
                       (after stop.sh --node I), with the settings the cluster was
                       started with; the other options are ignored
  -h, --help           this text

The token: $RAY_AUTH_TOKEN if set, else the file $RAY_AUTH_TOKEN_PATH if set (created
when missing), else ~/.ray/auth_token (created by `ray get-auth-token --generate`
when missing). Clients on this machine find it in the same places.
Worker processes bind random free ports. `ray` is taken from $RAY_BIN, else PATH.
EOF
}

workers=${WARMTUNE_CLUSTER_WORKERS:-2}
cpus=${WARMTUNE_CLUSTER_WORKER_CPUS:-1}
head_cpus=${WARMTUNE_CLUSTER_HEAD_CPUS:-0}
gcs_port=${WARMTUNE_CLUSTER_PORT:-6390}
dashboard_port=${WARMTUNE_CLUSTER_DASHBOARD_PORT:-8265}
base_port=${WARMTUNE_CLUSTER_BASE_PORT:-21000}
dir=${WARMTUNE_CLUSTER_DIR:-/tmp/wt-cluster}
object_store_mb=${WARMTUNE_CLUSTER_OBJECT_STORE_MB:-200}
bind=${WARMTUNE_CLUSTER_BIND:-loopback}
rejoin=

die() {
    echo "start.sh: error: $*" >&2
    exit 2
}

while [[ $# -gt 0 ]]; do
    case $1 in
        --workers) workers=${2:?--workers needs a number}; shift 2 ;;
        --cpus-per-worker) cpus=${2:?--cpus-per-worker needs a number}; shift 2 ;;
        --head-cpus) head_cpus=${2:?--head-cpus needs a number}; shift 2 ;;
        --port) gcs_port=${2:?--port needs a number}; shift 2 ;;
        --dashboard-port) dashboard_port=${2:?--dashboard-port needs a number}; shift 2 ;;
        --base-port) base_port=${2:?--base-port needs a number}; shift 2 ;;
        --dir) dir=${2:?--dir needs a path}; shift 2 ;;
        --object-store-mb) object_store_mb=${2:?--object-store-mb needs a number}; shift 2 ;;
        --bind) bind=${2:?--bind needs loopback or network}; shift 2 ;;
        --rejoin) rejoin=${2:?--rejoin needs a worker node number}; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown option '$1'; see cluster/local/start.sh --help" ;;
    esac
done

if [[ -n $rejoin ]]; then
    [[ $rejoin =~ ^[1-9][0-9]*$ ]] || die "--rejoin must be a worker node number (1, 2, ...), got '$rejoin'"
    [[ -f $dir/cluster.env ]] || die "no cluster runs in $dir (no $dir/cluster.env); start one first"
    # The settings the cluster was started with (cluster.env is written below), read
    # as data, not run as shell code.
    declare -A saved=()
    while IFS='=' read -r key value; do
        [[ $key =~ ^[A-Z_]+$ ]] || continue
        value=${value#\"}
        saved[$key]=${value%\"}
    done <"$dir/cluster.env"
    for key in RAY_ADDRESS WARMTUNE_CLUSTER_WORKERS WARMTUNE_CLUSTER_WORKER_CPUS \
        WARMTUNE_CLUSTER_BASE_PORT WARMTUNE_CLUSTER_OBJECT_STORE_MB WARMTUNE_CLUSTER_BIND \
        WARMTUNE_CLUSTER_TOKEN_FROM; do
        [[ -n ${saved[$key]:-} ]] || die "$dir/cluster.env has no $key (an older start.sh wrote it); stop and start the cluster to rejoin its nodes"
    done
    workers=${saved[WARMTUNE_CLUSTER_WORKERS]} cpus=${saved[WARMTUNE_CLUSTER_WORKER_CPUS]}
    base_port=${saved[WARMTUNE_CLUSTER_BASE_PORT]} object_store_mb=${saved[WARMTUNE_CLUSTER_OBJECT_STORE_MB]}
    bind=${saved[WARMTUNE_CLUSTER_BIND]} rejoin_address=${saved[RAY_ADDRESS]}
    # The token the cluster runs with, never a new one.
    token_saved=${saved[WARMTUNE_CLUSTER_TOKEN_FROM]}
    if [[ $token_saved == '$RAY_AUTH_TOKEN' ]]; then
        [[ -n ${RAY_AUTH_TOKEN:-} ]] || die "the cluster in $dir took its token from \$RAY_AUTH_TOKEN; set it to the same token to rejoin node $rejoin"
    else
        [[ -s $token_saved ]] || die "the cluster's token file $token_saved is gone; node $rejoin cannot join without it"
        unset RAY_AUTH_TOKEN
        export RAY_AUTH_TOKEN_PATH=$token_saved
    fi
    ((rejoin <= workers)) || die "the cluster in $dir has $workers worker node(s), no node $rejoin"
fi

for pair in "workers=$workers" "cpus-per-worker=$cpus" "head-cpus=$head_cpus" \
    "port=$gcs_port" "dashboard-port=$dashboard_port" "base-port=$base_port" \
    "object-store-mb=$object_store_mb"; do
    [[ ${pair#*=} =~ ^[0-9]+$ ]] || die "--${pair%%=*} must be a whole number, got '${pair#*=}'"
done
[[ $bind == loopback || $bind == network ]] || die "--bind must be 'loopback' or 'network', got '$bind'"
((workers >= 1)) || die "--workers must be at least 1 (a head alone is 'ray start --head')"
((cpus >= 1)) || die "--cpus-per-worker must be at least 1, or the workers run nothing"
((base_port + 10 * workers + 8 <= 65535)) || die "--base-port $base_port leaves too few ports for $workers workers; choose a lower one"

mkdir -p "$dir"
dir=$(cd "$dir" && pwd -P)
# Ray creates Unix sockets at DIR/w<i>/session_<date>_<pid>/sockets/<name>, and a
# socket path may be at most 107 bytes long.
((${#dir} <= 40)) || die "--dir $dir is ${#dir} characters long; Ray's socket paths under it would exceed 107, so use a shorter path (at most 40), e.g. --dir /tmp/wt-\$USER"

ray_bin=${RAY_BIN:-$(command -v ray || true)}
[[ -n $ray_bin && -x $ray_bin ]] || die "no 'ray' executable; activate the virtualenv that has warmtune, or set RAY_BIN"
bin_dir=$(dirname "$ray_bin")
python_bin="$bin_dir/python"
[[ -x $python_bin ]] || python_bin=$(command -v python3)
# Job entrypoints run `python -m warmtune ...` on the head; with this PATH that is
# the same Python (and the same Ray) as the cluster's.
export PATH="$bin_dir:$PATH"
export RAY_USAGE_STATS_ENABLED=0
# Ray's switch for a loopback-only node (see loopback_ray.py), which the ray CLI hint
# below exports: with --bind network it would put the head on 127.0.0.1.
unset RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER
# The head's dashboard and autoscaler export their own metrics on ports that Ray fixes
# (44227, 44217) unless told; two clusters on one machine would share them.
export DASHBOARD_METRIC_PORT=$((base_port + 7)) AUTOSCALER_METRIC_PORT=$((base_port + 8))
# How the nodes are started: Ray's CLI as it is, or (loopback) through a wrapper that
# keeps the node on 127.0.0.1, which Ray's CLI would replace by the machine's address.
if [[ $bind == loopback ]]; then
    ray_start=("$python_bin" "$(cd "$(dirname "$0")" && pwd -P)/loopback_ray.py" start --node-ip-address=127.0.0.1)
else
    ray_start=("$ray_bin" start)
fi

if [[ -z $rejoin && -f $dir/cluster.env ]] && grep -q '^WARMTUNE_CLUSTER_PIDS=' "$dir/cluster.env"; then
    die "a cluster already uses $dir (see $dir/cluster.env); stop it with cluster/local/stop.sh --dir $dir, or choose another --dir"
fi

# Token authentication, on for every node and every client.
case ${RAY_AUTH_MODE:-token} in
    token) ;;
    *) die "RAY_AUTH_MODE is '$RAY_AUTH_MODE'; this cluster keeps token authentication on: unset it or set RAY_AUTH_MODE=token" ;;
esac
export RAY_AUTH_MODE=token
if [[ -n ${RAY_AUTH_TOKEN:-} ]]; then
    token_from='$RAY_AUTH_TOKEN'
elif [[ -n ${RAY_AUTH_TOKEN_PATH:-} ]]; then
    if [[ ! -s $RAY_AUTH_TOKEN_PATH ]]; then
        mkdir -p "$(dirname "$RAY_AUTH_TOKEN_PATH")"
        (umask 077 && "$python_bin" -c 'import secrets; print(secrets.token_hex(32), end="")' >"$RAY_AUTH_TOKEN_PATH")
    fi
    token_from=$RAY_AUTH_TOKEN_PATH
else
    if [[ ! -s $HOME/.ray/auth_token ]]; then
        (umask 077 && "$ray_bin" get-auth-token --generate >/dev/null)
    fi
    token_from="$HOME/.ray/auth_token"
fi
# Whoever reads the token can run code on the cluster. `ray get-auth-token --generate`
# writes mode 0644 whatever the umask, so every token file is made private here.
if [[ $token_from != '$RAY_AUTH_TOKEN' ]]; then
    mode=$("$python_bin" -c 'import os, sys; print(format(os.stat(sys.argv[1]).st_mode & 0o777, "o"))' "$token_from")
    if [[ $mode != 600 && $mode != 400 ]]; then
        if [[ -O $token_from ]]; then
            chmod 600 "$token_from"
            echo "start.sh: the token file $token_from could be read by other users (mode $mode); made it private (mode 600)" >&2
        else
            echo "start.sh: warning: the token file $token_from (mode $mode) can be read by other users and is not yours to change; ask its owner to chmod 600 it" >&2
        fi
    fi
fi

node_ports() { # $1 = node index (0 = head)
    local p=$((base_port + 10 * $1))
    echo --node-manager-port=$p --object-manager-port=$((p + 1)) \
        --dashboard-agent-listen-port=$((p + 2)) --dashboard-agent-grpc-port=$((p + 3)) \
        --runtime-env-agent-port=$((p + 4)) --metrics-export-port=$((p + 5)) \
        --min-worker-port=0 --max-worker-port=0
}

object_store_bytes=$((object_store_mb * 1024 * 1024))
start_worker() { # $1 = worker node index; joins the cluster at $address
    # Each node its own temp dir: a node's runtime env agent deletes the job packages
    # (working_dir, py_modules) it no longer needs from DIR/session_*/runtime_resources,
    # and with one shared dir it would delete them under the other nodes' workers.
    mkdir -p "$dir/w$1"
    # shellcheck disable=SC2046  # node_ports prints separate words on purpose
    "${ray_start[@]}" --address="$address" --num-cpus="$cpus" \
        --resources="{\"node_$1\": 1}" \
        --temp-dir="$dir/w$1" --object-store-memory="$object_store_bytes" --disable-usage-stats \
        $(node_ports "$1")
}

if [[ -n $rejoin ]]; then
    address=$rejoin_address
    if [[ -n $("$(dirname "$0")/stop.sh" --dir "$dir" --node "$rejoin" --list) ]]; then
        die "worker node $rejoin of the cluster in $dir is running; stop it first (stop.sh --dir $dir --node $rejoin)"
    fi
    log="$dir/w$rejoin/rejoin.log"
    mkdir -p "$dir/w$rejoin"
    if ! start_worker "$rejoin" >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        die "worker node $rejoin did not start; the ray output is in $log"
    fi
    echo "warmtune: worker node $rejoin joined the cluster at $address again"
    exit 0
fi

# Every port this cluster binds, checked up front so a clash names the option to change.
ports=("$gcs_port:--port" "$dashboard_port:--dashboard-port")
for ((i = 0; i <= workers; i++)); do
    for k in 0 1 2 3 4 5; do
        ports+=("$((base_port + 10 * i + k)):--base-port")
    done
done
ports+=("$((base_port + 6)):--base-port" "$((base_port + 7)):--base-port" "$((base_port + 8)):--base-port")
"$python_bin" - "${ports[@]}" <<'EOF' || exit 2
import socket
import sys

for item in sys.argv[1:]:
    port, option = item.split(":")
    with socket.socket() as s:
        # As servers do: a port whose old connections linger in TIME_WAIT is free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("", int(port)))
        except OSError:
            sys.exit(f"start.sh: error: port {port} is in use; choose another {option}")
EOF

log="$dir/start.log"
: >"$log"
started=0
cleanup_on_error() {
    echo "start.sh: error: the cluster did not start; the ray output is in $log:" >&2
    tail -n 20 "$log" >&2 || true
    if ((started)); then
        "$(dirname "$0")/stop.sh" --dir "$dir" >&2 || true
    fi
}
trap cleanup_on_error ERR

started=1
# shellcheck disable=SC2046  # node_ports prints separate words on purpose
"${ray_start[@]}" --head --port="$gcs_port" --num-cpus="$head_cpus" \
    --resources='{"node_0": 1}' \
    --include-dashboard=true --dashboard-host=127.0.0.1 --dashboard-port="$dashboard_port" \
    --ray-client-server-port=$((base_port + 6)) \
    --temp-dir="$dir" --object-store-memory="$object_store_bytes" --disable-usage-stats \
    $(node_ports 0) >>"$log" 2>&1
address=$("$python_bin" -c 'import sys; print(open(sys.argv[1]).read().strip())' "$dir/ray_current_cluster")

for ((i = 1; i <= workers; i++)); do
    start_worker "$i" >>"$log" 2>&1
done
trap - ERR

# The processes of this cluster (stop.sh finds later ones, such as workers, the same way).
pids=$("$(dirname "$0")/stop.sh" --dir "$dir" --list | tr '\n' ' ')
dashboard="http://127.0.0.1:$dashboard_port"
loopback_env= loopback_why=
if [[ $bind == loopback ]]; then
    loopback_env=" RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0"
    loopback_why=", and keeps a 127.0.0.1 address only with the second"
fi
cat >"$dir/cluster.env" <<EOF
# Written by cluster/local/start.sh; read by stop.sh and tests.
RAY_ADDRESS=$address
WARMTUNE_DASHBOARD=$dashboard
WARMTUNE_CLUSTER_DIR=$dir
WARMTUNE_CLUSTER_WORKERS=$workers
WARMTUNE_CLUSTER_BIND=$bind
WARMTUNE_CLUSTER_WORKER_CPUS=$cpus
WARMTUNE_CLUSTER_BASE_PORT=$base_port
WARMTUNE_CLUSTER_OBJECT_STORE_MB=$object_store_mb
WARMTUNE_CLUSTER_TOKEN_FROM=$token_from
WARMTUNE_CLUSTER_PIDS="$pids"
EOF

cat <<EOF
warmtune: local Ray cluster up: head + $workers worker node(s), $cpus CPU(s) each (head: $head_cpus)
  address:   $address
  dashboard: $dashboard
  token:     $token_from
  submit:    warmtune submit JOB.yaml --address $dashboard --wait
  attach:    warmtune run JOB.yaml --address $address
  ray CLI:   export RAY_AUTH_MODE=token$loopback_env   (Ray's own CLI sends the token only then$loopback_why:
             ray status --address $address, ray job list --address $dashboard)
  stop:      $(dirname "$0")/stop.sh --dir $dir
EOF
