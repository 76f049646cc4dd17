#!/usr/bin/env bash
# Stop the local Ray cluster that cluster/local/start.sh started in --dir DIR, and
# nothing else. `ray stop` cannot do this: it stops every Ray process on the machine
# (it matches process names, with no notion of which cluster they belong to), which
# would also kill other clusters and embedded `ray.init()` instances. Every process of
# a cluster carries its Ray temp dir (or the session dir under it) on its command
# line, so this script stops the Ray processes whose command line names DIR.
#
# With --node I it stops only worker node I (its raylet, agents and workers), as a
# crash of that machine would with --kill: for fault-tolerance tests.
#
# Usage: cluster/local/stop.sh [--dir DIR] [--node I] [--kill] [--grace-period S] [--list]
set -euo pipefail

dir=${WARMTUNE_CLUSTER_DIR:-/tmp/wt-cluster}
grace=10
list_only=0
node=
kill_now=0

die() {
    echo "stop.sh: error: $*" >&2
    exit 2
}

while [[ $# -gt 0 ]]; do
    case $1 in
        --dir) dir=${2:?--dir needs a path}; shift 2 ;;
        --grace-period) grace=${2:?--grace-period needs seconds}; shift 2 ;;
        --list) list_only=1; shift ;;
        --node) node=${2:?--node needs a worker node number}; shift 2 ;;
        --kill) kill_now=1; shift ;;
        -h | --help)
            cat <<'EOF'
Usage: cluster/local/stop.sh [--dir DIR] [--node I] [--kill] [--grace-period S] [--list]

Stop the Ray cluster that cluster/local/start.sh started with the same --dir
(default $WARMTUNE_CLUSTER_DIR or /tmp/wt-cluster): SIGTERM to its processes, SIGKILL
to those still alive after S seconds (default 10). Other Ray instances on this
machine are left alone. --list prints the cluster's process ids and stops nothing.

--node I     only worker node I (1..N, the node with resource node_<I>): its raylet,
             agents, log monitor and the workers running on it. The rest of the
             cluster keeps running (and notices the node is gone).
--kill       SIGKILL at once, no SIGTERM: a crash rather than a shutdown.
EOF
            exit 0
            ;;
        *) die "unknown option '$1'; see cluster/local/stop.sh --help" ;;
    esac
done
[[ $grace =~ ^[0-9]+$ ]] || die "--grace-period must be whole seconds, got '$grace'"
[[ -d $dir ]] || die "no cluster directory $dir; pass the --dir that start.sh used"
dir=$(cd "$dir" && pwd -P)
cluster_dir=$dir
if [[ -n $node ]]; then
    [[ $node =~ ^[1-9][0-9]*$ ]] || die "--node must be a worker node number (1, 2, ...), got '$node'; to stop the head, stop the whole cluster (no --node)"
    [[ -d $dir/w$node ]] || die "the cluster in $dir has no worker node $node (no $dir/w$node)"
    # Worker node I keeps everything under DIR/wI (see start.sh); the head's
    # processes name DIR but never DIR/wI.
    dir=$dir/w$node
fi

# The cluster's processes: the Ray processes whose command line names this cluster's
# dir ("DIR/..." or the value "DIR", so "/tmp/wt-c" never matches "/tmp/wt-c2") or its
# GCS address (the Ray client server), and all their descendants (dashboard modules,
# agents, workers, which rename themselves "ray::..." and drop their arguments, and the
# processes that jobs start).
address=
# The Ray client server belongs to the head (matched by the cluster address).
[[ -n $node ]] || address=$(cat "$dir/ray_current_cluster" 2>/dev/null || true)
cluster_pids() {
    local -A parent=() chosen=() zombie=()
    local pid stat rest cmd grew
    local -a argv
    for d in /proc/[0-9]*; do
        pid=${d#/proc/}
        [[ $pid == "$$" || $pid == "$BASHPID" ]] && continue
        { read -r stat <"$d/stat"; } 2>/dev/null || continue
        rest=${stat##*) }   # fields after the command name: state, ppid, ...
        # A zombie has exited and only waits for its parent to reap it: not running.
        [[ ${rest%% *} == Z ]] && zombie[$pid]=1
        rest=${rest#* }
        parent[$pid]=${rest%% *}
        { mapfile -d '' -t argv <"$d/cmdline"; } 2>/dev/null || continue
        cmd="${argv[*]}"
        if [[ " $cmd" == *"$dir/"* || " $cmd " == *"=$dir "* || " $cmd " == *" $dir "* ||
            (-n $address && " $cmd " == *" --address=$address "*) ]]; then
            case $cmd in
                *raylet* | *gcs_server* | *ray/* | *" -m ray."*) chosen[$pid]=1 ;;
            esac
        fi
    done
    grew=1
    while ((grew)); do
        grew=0
        for pid in "${!parent[@]}"; do
            if [[ -z ${chosen[$pid]:-} && -n ${chosen[${parent[$pid]}]:-} ]]; then
                chosen[$pid]=1
                grew=1
            fi
        done
    done
    for pid in "${!chosen[@]}"; do
        [[ -n ${zombie[$pid]:-} ]] || echo "$pid"
    done
}

if ((list_only)); then
    cluster_pids
    exit 0
fi

what="the cluster in $cluster_dir"
[[ -z $node ]] || what="worker node $node of the cluster in $cluster_dir"
mapfile -t pids < <(cluster_pids)
if ((${#pids[@]} == 0)); then
    echo "stop.sh: no running Ray processes of $what"
else
    if ((kill_now)); then
        kill -KILL "${pids[@]}" 2>/dev/null || true
        grace=0
    else
        kill -TERM "${pids[@]}" 2>/dev/null || true
    fi
    for ((t = 0; t < grace * 10; t++)); do
        alive=0
        for pid in "${pids[@]}"; do
            # A zombie (state Z) has exited; it only waits for its parent to reap it.
            { read -r stat <"/proc/$pid/stat"; } 2>/dev/null || continue
            rest=${stat##*) }
            [[ ${rest%% *} == Z ]] || { alive=1 && break; }
        done
        ((alive)) || break
        sleep 0.1
    done
    # Whatever is still alive, and anything started meanwhile (a worker a raylet
    # spawned while it shut down), gets SIGKILL.
    mapfile -t alive < <(cluster_pids)
    if ((${#alive[@]} > 0)); then
        kill -KILL "${alive[@]}" 2>/dev/null || true
        # SIGKILL is delivered, not awaited: wait until they are gone (or zombies), so
        # that a --list right after this finds nothing.
        for ((t = 0; t < 50; t++)); do
            mapfile -t alive < <(cluster_pids)
            ((${#alive[@]} > 0)) || break
            kill -KILL "${alive[@]}" 2>/dev/null || true
            sleep 0.1
        done
    fi
    echo "stop.sh: stopped ${#pids[@]} Ray process(es) of $what"
fi
# A stopped node leaves the cluster running; only a stopped cluster loses its files.
[[ -n $node ]] || rm -f "$dir/cluster.env" "$dir/ray_current_cluster"
