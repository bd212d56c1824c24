#!/usr/bin/env bash
# Removes what netns-up.sh made (missing pieces are fine).
# usage: deploy/netns-down.sh PREFIX N
prefix=${1:?usage: netns-down.sh PREFIX N}
n=${2:?usage: netns-down.sh PREFIX N}
for k in $(seq 1 "$n"); do
    ns=$prefix$k
    # Whatever still runs in the namespace (a launcher left by a killed
    # mpirun) goes first, so the namespace can really disappear.
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
done
ip netns del "${prefix}sw" 2>/dev/null
exit 0
