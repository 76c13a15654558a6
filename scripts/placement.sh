# Sourced by scripts/bench-gateway.sh, scripts/bench-peers.sh and scripts/soak.sh: where the process
# under test and the load run. With 2 or more allowed cores (read from the affinity mask: a
# container's cpuset need not start at 0) and PIN unset or 1, the process under test gets the last
# core alone (ON_GW) and the load generator and fake upstreams the others (ON_REST); otherwise both
# are empty and the scheduler places everything. Sets GW_CPUS, REST_CPUS, CORES, PINNED (1 or 0),
# ON_GW and ON_REST (use them as ${ON_GW[@]+"${ON_GW[@]}"} under `set -u`).
read -r GW_CPUS REST_CPUS CORES < <(python3 -c '
import os
cpus = sorted(os.sched_getaffinity(0))
print(cpus[-1], ",".join(map(str, cpus[:-1])) or "-", len(cpus))')
ON_GW=()
ON_REST=()
PINNED=0
if [ "${PIN:-1}" = 1 ] && [ "$CORES" -ge 2 ]; then
    ON_GW=(taskset -c "$GW_CPUS")
    ON_REST=(taskset -c "$REST_CPUS")
    PINNED=1
fi
