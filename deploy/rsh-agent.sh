#!/usr/bin/env bash
# Stands in for ssh when the "hosts" are network namespaces on this machine
# (deploy/netns-up.sh): mpirun runs `AGENT HOST WORDS...`; we run the words
# as one shell command inside namespace HOST.  Each namespace also gets its
# own UTS namespace with hostname HOST: Open MPI keys its session directory
# under /tmp by host name, and launchers sharing one would race.
# Use: mpirun --mca plm_rsh_agent /path/to/rsh-agent.sh --hostfile H ...
host=$1
shift
exec ip netns exec "$host" unshare --uts sh -c 'hostname "$1"; shift; exec sh -c "$*"' agent "$host" "$@"
