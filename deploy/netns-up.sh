#!/usr/bin/env bash
# Several "hosts" on one machine: network namespaces PREFIX1..PREFIXn, each
# with one veth end (10.77.0.K/24) plugged into a bridge that lives in its
# own namespace PREFIXsw.  Nothing is added to the machine's own network
# namespace, so no traffic ever leaves by its default route.
# usage: deploy/netns-up.sh PREFIX N   (then deploy/netns-down.sh PREFIX N)
set -euo pipefail
prefix=${1:?usage: netns-up.sh PREFIX N}
n=${2:?usage: netns-up.sh PREFIX N}
sw=${prefix}sw
ip netns add "$sw"
ip -n "$sw" link add br0 type bridge
ip -n "$sw" link set br0 up
ip -n "$sw" link set lo up
for k in $(seq 1 "$n"); do
    ns=$prefix$k
    ip netns add "$ns"
    # Both ends are created inside the switch namespace, then one moves out.
    ip -n "$sw" link add "p$k" type veth peer name eth0 netns "$ns"
    ip -n "$sw" link set "p$k" master br0
    ip -n "$sw" link set "p$k" up
    ip -n "$ns" addr add "10.77.0.$k/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
done
