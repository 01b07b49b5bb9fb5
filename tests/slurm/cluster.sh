#!/usr/bin/env bash
# A real one-node SLURM cluster on localhost, for tests/test_slurm.py and by hand (as root, Debian/Ubuntu):
#
#   tests/slurm/cluster.sh start    install SLURM + munge with apt-get if missing, write /etc/slurm/slurm.conf,
#                                   start munged, slurmctld and slurmd, wait until the node takes jobs
#   tests/slurm/cluster.sh stop     cancel the cluster's jobs, stop the daemons it started (by PID, never by
#                                   name) and put back the /etc/slurm/slurm.conf it replaced
#   tests/slurm/cluster.sh status   the daemons it started and `sinfo`
#
# Exit status 3 from `start` means this machine cannot have it (not root, SLURM missing and apt-get unavailable or
# failing): the test skips with the printed reason. Any other failure exits 1 (the test fails). State, daemon
# logs and PID files go to $HYBRIDREDUCE_SLURM_DIR (default /tmp/hybridreduce-slurm). No systemd: each daemon
# runs in the foreground, as a background job of this script that records its PID.
#
# The node advertises this machine's CPUs and a bit less memory than is free now (CR_Core_Memory: jobs get the
# CPUs and memory they ask for). No slurmdbd: `sacct` does not work, so the executor plugin must poll with
# `squeue` (--slurm-status-command squeue), which sees finished jobs for MinJobAge = 300 s. slurm.conf must be
# at /etc/slurm/slurm.conf: the plugin's job step removes SLURM_CONF from the job's environment.
set -euo pipefail

DIR=${HYBRIDREDUCE_SLURM_DIR:-/tmp/hybridreduce-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by hybridreduce tests/slurm/cluster.sh"
PACKAGES=(slurmctld slurmd slurm-client munge)

cannot() { echo "cluster.sh: cannot start a local SLURM: $*" >&2; exit 3; }
fail() { echo "cluster.sh: $*" >&2; exit 1; }
log() { echo "cluster.sh: $*" >&2; }

# PID from $1 if that process is alive and runs the program $2 (guards against a reused PID)
alive_pid() {
    local file=$1 prog=$2 pid
    [[ -s $file ]] || return 1
    pid=$(<"$file")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    local cmdline
    cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 1
    [[ $cmdline == *"$prog"* ]] || return 1
    echo "$pid"
}

install_if_missing() {
    local missing=()
    for p in slurmctld slurmd munged sbatch squeue; do
        command -v "$p" >/dev/null 2>&1 || [[ -x /usr/sbin/$p ]] || missing+=("$p")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    command -v apt-get >/dev/null 2>&1 || cannot "missing ${missing[*]} and no apt-get to install them"
    log "installing ${PACKAGES[*]} (missing: ${missing[*]})"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q "${PACKAGES[@]}" >"$DIR/apt.log" 2>&1; then
        apt-get update -q >>"$DIR/apt.log" 2>&1 || true
        apt-get install -y -q "${PACKAGES[@]}" >>"$DIR/apt.log" 2>&1 \
            || cannot "apt-get install ${PACKAGES[*]} failed (see $DIR/apt.log)"
    fi
}

munge_works() { command -v munge >/dev/null && munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
    if munge_works; then
        log "munged already running (not started by this script; left alone)"
        return 0
    fi
    if [[ ! -s /etc/munge/munge.key ]]; then
        if command -v mungekey >/dev/null; then mungekey --create --keyfile=/etc/munge/munge.key
        else dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; fi
    fi
    chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
    install -d -o munge -g munge -m 0755 /run/munge
    setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged --foreground </dev/null \
        >"$DIR/munged.out" 2>&1 &
    echo $! >"$DIR/munged.pid"
    for _ in $(seq 50); do munge_works && return 0; sleep 0.2; done
    fail "munged did not come up (see $DIR/munged.out)"
}

write_conf() {
    local node mem_avail real_mem
    # this machine's CPU layout as slurmd sees it, e.g. CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ...
    node=$(slurmd -C | head -1 | sed -E 's/^NodeName=[^ ]+ //; s/ RealMemory=[0-9]+//')
    mem_avail=$(awk '/^MemAvailable:/ {print int($2 / 1024)}' /proc/meminfo)
    real_mem=$(( mem_avail * 85 / 100 ))
    mkdir -p /etc/slurm
    if [[ -f $CONF ]] && ! grep -qF "$MARK" "$CONF"; then
        cp -p "$CONF" "$DIR/slurm.conf.orig"
        log "saved the existing $CONF to $DIR/slurm.conf.orig (put back by stop)"
    fi
    cat >"$CONF" <<EOF
$MARK
ClusterName=hybridreduce
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.daemon.pid
SlurmdPidFile=$DIR/slurmd.daemon.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
# squeue must still show finished jobs when the executor plugin polls (no slurmdbd, no sacct)
MinJobAge=300
ReturnToService=2
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
InactiveLimit=0
KillWait=5
SlurmdTimeout=300
NodeName=localhost NodeAddr=127.0.0.1 $node RealMemory=$real_mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
    log "node: $node RealMemory=$real_mem (of $mem_avail MB available)"
}

node_state() { sinfo -h -n localhost -o %t 2>/dev/null | head -1; }

start() {
    [[ $(id -u) -eq 0 ]] || cannot "needs root (installs packages, writes $CONF, starts daemons)"
    mkdir -p "$DIR"
    if alive_pid "$DIR/slurmctld.pid" slurmctld >/dev/null && alive_pid "$DIR/slurmd.pid" slurmd >/dev/null; then
        log "already running"
        return 0
    fi
    install_if_missing
    command -v setpriv >/dev/null || fail "setpriv (util-linux) is missing"
    for d in slurmctld slurmd; do
        if pid=$(alive_pid "$DIR/$d.pid" "$d"); then kill -TERM "$pid" 2>/dev/null || true; fi
    done
    rm -rf "$DIR/state" "$DIR/spool"
    mkdir -p "$DIR/state" "$DIR/spool"
    start_munge
    write_conf
    /usr/sbin/slurmctld -D -c </dev/null >"$DIR/slurmctld.out" 2>&1 &
    echo $! >"$DIR/slurmctld.pid"
    /usr/sbin/slurmd -D -N localhost </dev/null >"$DIR/slurmd.out" 2>&1 &
    echo $! >"$DIR/slurmd.pid"
    local state=""
    for _ in $(seq 120); do
        state=$(node_state)
        case $state in
            idle|mix|alloc) log "node localhost is $state"; return 0 ;;
            down*|drain*|drng*) scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true ;;
        esac
        for d in slurmctld slurmd; do
            if ! alive_pid "$DIR/$d.pid" "$d" >/dev/null; then
                tail -n 20 "$DIR/$d.out" "$DIR/$d.log" >&2 2>/dev/null || true
                stop
                fail "$d exited (logs in $DIR)"
            fi
        done
        sleep 0.5
    done
    sinfo -N -l >&2 || true
    stop
    fail "node never became idle (last state '$state'; logs in $DIR)"
}

stop_pid() {  # stop_pid <name> <program>: TERM, then KILL after 10 s
    local pid
    pid=$(alive_pid "$DIR/$1.pid" "$2") || { rm -f "$DIR/$1.pid"; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do [[ -d /proc/$pid ]] || break; sleep 0.2; done
    [[ -d /proc/$pid ]] && kill -KILL "$pid" 2>/dev/null || true
    rm -f "$DIR/$1.pid"
    log "stopped $1 ($pid)"
}

stop() {
    [[ -d $DIR ]] || return 0
    if alive_pid "$DIR/slurmctld.pid" slurmctld >/dev/null; then
        # jobs' step daemons (slurmstepd) belong to the jobs: cancel the jobs so they end with them
        local jobs
        jobs=$(squeue -h -o %i 2>/dev/null || true)
        if [[ -n $jobs ]]; then
            # shellcheck disable=SC2086
            scancel $jobs 2>/dev/null || true
            for _ in $(seq 30); do [[ -z $(squeue -h -t R,CG -o %i 2>/dev/null) ]] && break; sleep 0.5; done
        fi
    fi
    stop_pid slurmd slurmd
    stop_pid slurmctld slurmctld
    stop_pid munged munged
    if [[ -f $DIR/slurm.conf.orig ]]; then
        mv -f "$DIR/slurm.conf.orig" "$CONF"
    elif [[ -f $CONF ]] && grep -qF "$MARK" "$CONF"; then
        rm -f "$CONF"
    fi
}

status() {
    for d in munged slurmctld slurmd; do
        if pid=$(alive_pid "$DIR/$d.pid" "$d"); then echo "$d: running ($pid)"; else echo "$d: not started here"; fi
    done
    sinfo 2>&1 || true
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
