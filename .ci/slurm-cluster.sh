#!/usr/bin/env bash
# A one-node SLURM cluster on localhost for the tests (tests/test_slurm.py):
#   .ci/slurm-cluster.sh start   install slurm-wlm + munge if needed, write the config, start
#                                munged, slurmctld and slurmd, wait until the node is idle
#   .ci/slurm-cluster.sh stop    stop the daemons this script started (by their pid files)
#   .ci/slurm-cluster.sh status  exit 0 if the cluster answers
#
# Needs root (apt-get, daemons). Pitfalls this handles (Debian bookworm, slurm-wlm 22.05, no
# systemd, no cgroups): nothing starts the daemons, so munged runs as the munge user with
# /run/munge; no slurmdbd, so there is no accounting -- `sacct` fails and the tests use the
# executor plugin's `squeue` status command, which needs finished jobs to stay visible
# (MinJobAge); the jobstep drops SLURM_CONF for the inner srun, so the config must be at the
# default /etc/slurm/slurm.conf; task/none + proctrack/linuxproc because there are no cgroups;
# a fake `gpu` GRES (so GPU requests are accepted) needs gres.conf File= entries, one distinct
# device file per GPU (/dev/null, /dev/zero, ...: a duplicate file is fatal to slurmd).
# Every finished job is also logged by jobcomp/filetxt, the tests' proof that jobs ran here;
# finished jobs stay in `scontrol show job` for an hour (MinJobAge), where the tests read what
# each job asked for. The node has the features cpu and gpu, so docs/cluster.md's constraint-style
# profile (sbatch -C) runs here too; a QOS is accepted but not enforced without accounting.
set -euo pipefail

CONF_DIR=/etc/slurm
LOG_DIR=/var/log/slurm
STATE_DIR=/var/spool/slurmctld
SPOOL_DIR=/var/spool/slurmd
RUN_DIR=/run/pdetransfer-slurm
JOBCOMP_LOG=$LOG_DIR/jobcomp.log
NODE=localhost
# Fake GPUs: SLURM wants a distinct device file per GPU and never opens them (task/none).
FAKE_GPU_FILES=(/dev/null /dev/zero /dev/full /dev/urandom)
FAKE_GPUS=${#FAKE_GPU_FILES[@]}
# The node claims more CPUs and memory than a CI machine has (config_overrides keeps it from
# being drained for that): the slurm profile's real-cluster requests (8 CPUs, 16 GB for a
# pre-training job) must be accepted here too. Nothing is bound (task/none) and memory is not
# a consumable (CR_Core), so the test profile's job limit is what bounds concurrency.
CPUS=64
MEMORY_MB=262144

log() { echo "slurm-cluster: $*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi
}

install_packages() {
    if command -v slurmctld >/dev/null && command -v munged >/dev/null; then
        return
    fi
    log "installing slurm-wlm and munge"
    # Three tries: a passing registry hiccup should not fail a whole CI run.
    local attempt
    for attempt in 1 2 3; do
        if as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
            as_root env DEBIAN_FRONTEND=noninteractive \
                apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null; then
            return 0
        fi
        log "install attempt $attempt failed; retrying in 10 s"
        sleep 10
    done
    return 1
}

MARKER="# Written by .ci/slurm-cluster.sh: a one-node test cluster, not for production."

write_config() {
    if [ -s "$CONF_DIR/slurm.conf" ] && ! ours; then
        log "$CONF_DIR/slurm.conf exists and is not ours: refusing to replace a real cluster's config"
        return 1
    fi
    as_root mkdir -p "$CONF_DIR" "$LOG_DIR" "$STATE_DIR" "$SPOOL_DIR" "$RUN_DIR"
    as_root tee "$CONF_DIR/slurm.conf" >/dev/null <<EOF
$MARKER
ClusterName=pdetransfer-ci
SlurmctldHost=$NODE
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$STATE_DIR
SlurmdSpoolDir=$SPOOL_DIR
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=3600
KillWait=10
SchedulerParameters=sched_interval=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$JOBCOMP_LOG
MpiDefault=none
MailProg=/bin/true
GresTypes=gpu
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEMORY_MB Gres=gpu:$FAKE_GPUS Features=cpu,gpu State=UNKNOWN
PartitionName=cpu Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$NODE MaxTime=INFINITE State=UP
EOF
    {
        echo "# Fake GPUs for the tests: one distinct device file per GPU."
        for file in "${FAKE_GPU_FILES[@]}"; do echo "NodeName=$NODE Name=gpu File=$file"; done
    } | as_root tee "$CONF_DIR/gres.conf" >/dev/null
    # slurmctld starts with a clean state (-c), so job ids restart at 1: so does the history.
    as_root truncate -s 0 "$JOBCOMP_LOG" 2>/dev/null || as_root touch "$JOBCOMP_LOG"
}

start_munge() {
    if [ -f /run/munge/munged.pid ] && as_root kill -0 "$(cat /run/munge/munged.pid)" 2>/dev/null; then
        return
    fi
    as_root mkdir -p /run/munge /var/log/munge /var/lib/munge
    as_root chown munge:munge /run/munge /var/log/munge /var/lib/munge
    if [ ! -s /etc/munge/munge.key ]; then
        as_root runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
    fi
    as_root runuser -u munge -- /usr/sbin/munged
}

cluster_answers() {
    sinfo -h -o '%t' 2>/dev/null | grep -qx 'idle\|mix\|alloc'
}

start() {
    local begin=$SECONDS
    install_packages
    write_config
    start_munge
    as_root /usr/sbin/slurmctld -c
    as_root /usr/sbin/slurmd -N "$NODE"
    for _ in $(seq 120); do
        if cluster_answers; then
            log "up after $((SECONDS - begin)) s: $(sinfo -h -o '%P %t %G' | tr '\n' ' ')"
            return 0
        fi
        sleep 0.5
    done
    log "the node did not become idle; slurmctld log tail:"
    as_root tail -n 20 "$LOG_DIR/slurmctld.log" >&2 || true
    as_root tail -n 20 "$LOG_DIR/slurmd.log" >&2 || true
    return 1
}

stop_pidfile() {
    local pidfile=$1 pid
    [ -f "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if as_root kill "$pid" 2>/dev/null; then
        for _ in $(seq 40); do
            as_root kill -0 "$pid" 2>/dev/null || break
            sleep 0.25
        done
        as_root kill -9 "$pid" 2>/dev/null || true
    fi
    as_root rm -f "$pidfile"
}

ours() {
    head -n 1 "$CONF_DIR/slurm.conf" 2>/dev/null | grep -qxF "$MARKER"
}

stop() {
    if ! ours; then
        log "$CONF_DIR/slurm.conf is not the test cluster's: nothing to stop"
        return 0
    fi
    if command -v scancel >/dev/null && cluster_answers; then
        # slurmstepd outlives slurmd: end the jobs first so that no job process is left over.
        as_root scancel --user="$(id -un)" 2>/dev/null || true
        for _ in $(seq 60); do
            [ -z "$(squeue -h -t RUNNING,PENDING,COMPLETING -o %i 2>/dev/null)" ] && break
            sleep 0.5
        done
    fi
    stop_pidfile "$RUN_DIR/slurmd.pid"
    stop_pidfile "$RUN_DIR/slurmctld.pid"
    stop_pidfile /run/munge/munged.pid
    log "stopped"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) cluster_answers ;;
    *)
        echo "usage: $0 {start|stop|status}" >&2
        exit 2
        ;;
esac
