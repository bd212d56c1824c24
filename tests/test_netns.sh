#!/usr/bin/env bash
# Multi-host over TCP on one machine: three network namespaces joined by
# veth links through a bridge (deploy/netns-up.sh), Open MPI launched in
# the first with deploy/rsh-agent.sh standing in for ssh, one rank per
# "host".  The logits must be bitwise those of one process.  Skipped, with
# the reason, only where namespaces cannot be created.
# usage: tests/test_netns.sh BUILD_DIR
set -u
build=${1:-build}
moe=$(cd "$build" && pwd)/moe
root=$(cd "$(dirname "$0")/.." && pwd)
fx=$(cd "${MOE_FIXTURES:-../shared/fixtures}/models" && pwd)
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
prefix=moe$$h
tmp=$(mktemp -d /tmp/moe_test_netns.XXXXXX)
cleanup() {
    "$root/deploy/netns-down.sh" "$prefix" 3
    rm -rf "$tmp" /tmp/ompi."$prefix"* 2> /dev/null
}
trap cleanup EXIT

if ! ip netns add "${prefix}probe" 2> "$tmp/why"; then
    echo "test_netns: skipped: cannot create network namespaces here ($(head -n 1 "$tmp/why"))"
    exit 0
fi
ip netns del "${prefix}probe"
if ! "$root/deploy/netns-up.sh" "$prefix" 3 2> "$tmp/why"; then
    echo "test_netns: skipped: cannot build the veth/bridge topology ($(head -n 1 "$tmp/why"))"
    exit 0
fi

pass=0; fail=0
check() {
    if [ "$2" -eq 0 ]; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $1 ${3:-}"; fi
}
printf '%s slots=2\n' "${prefix}1" "${prefix}2" "${prefix}3" > "$tmp/hosts"
# The flags deploy/README.md explains: TCP on the namespace subnet, no
# binding (each launcher thinks it owns the machine), yield while idle.
netrun() {
    timeout 120 ip netns exec "${prefix}1" mpirun --hostfile "$tmp/hosts" --mca plm_rsh_agent "$root/deploy/rsh-agent.sh" \
        --map-by node --bind-to none --mca btl self,tcp --mca btl_tcp_if_include 10.77.0.0/24 \
        --mca oob_tcp_if_include 10.77.0.0/24 --mca mpi_yield_when_idle 1 -x ASAN_OPTIONS "$@"
}

for model in tiny-v3-Q4_K_M tiny-v2lite-f32; do
    toks=$(awk -F'\t' -v m="$model" '$1 == m && $2 == "p2" { print $4 }' "$fx/manifest.tsv")
    "$moe" logits -m "$fx/$model.gguf" --tokens "$toks" -o "$tmp/ref.f32" 2> /dev/null
    netrun -np 3 "$moe" logits -m "$fx/$model.gguf" --tokens "$toks" -o "$tmp/net.f32" --stages 2 2> "$tmp/err"
    check "$model over 3 namespaces runs" $? "$(tail -n 5 "$tmp/err")"
    cmp -s "$tmp/ref.f32" "$tmp/net.f32"
    check "$model over 3 namespaces: logits bitwise equal to one process" $?
    # Each rank really ran on its own "host".
    [ "$(grep -c "cluster: rank [0-2] on ${prefix}[1-3] " "$tmp/err")" -eq 3 ] &&
        [ "$(grep -o "on ${prefix}[1-3] " "$tmp/err" | sort -u | wc -l)" -eq 3 ]
    check "$model: one rank per namespace" $? "$(grep cluster: "$tmp/err")"
done

echo "test_netns: $pass checks passed, $fail failed"
[ $fail -eq 0 ]
