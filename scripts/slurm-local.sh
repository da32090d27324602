#!/usr/bin/env bash
# A real single-node SLURM cluster on loopback, for tests and CI.
#
# Usage: scripts/slurm-local.sh start | stop [--purge] | status
#
# Runs slurmctld, slurmd and munged on 127.0.0.1 so that `snakemake --executor slurm` submits real sbatch jobs.
# Every setting below follows the measured recipe in shared/docs/local-slurm.md (section numbers cited inline).
#
#   start   install the Debian packages if missing, start munge, write /etc/slurm/{slurm,gres,cgroup}.conf,
#           (re)start the daemons if anything changed, and wait until the node is idle. Idempotent: a second
#           start with the cluster up is a no-op.
#   stop    cancel all jobs, shut the daemons down by pid/socket; --purge also deletes $STATE_DIR.
#   status  print daemon and node state; exit 0 only when the node accepts jobs.
#
# Environment:
#   JARVIS_SLURM_STATE_DIR (or STATE_DIR)  state, spool, pid and log files   (default /tmp/jarvis-slurm)
#   JARVIS_SLURM_GPUS                      number of fake GPUs on the node (default 2; 0 disables GRES)
#   JARVIS_SLURM_TIMEOUT                   seconds to wait for the node      (default 60)
#
# Requires root and a throwaway machine: it writes /etc/slurm and jobs run as root (local-slurm.md §8).
# Nothing is stopped by process name: daemons are stopped through their pid files or sockets.
set -euo pipefail

STATE_DIR="${JARVIS_SLURM_STATE_DIR:-${STATE_DIR:-/tmp/jarvis-slurm}}"
GPUS="${JARVIS_SLURM_GPUS:-2}"
TIMEOUT="${JARVIS_SLURM_TIMEOUT:-60}"
CONF_DIR=/etc/slurm            # Debian's default: clients find slurm.conf without SLURM_CONF (§3)
CLUSTER=localci
PARTITION=debug

CTLD_PID="$STATE_DIR/run/slurmctld.pid"
SLURMD_PID="$STATE_DIR/run/slurmd.pid"
CTLD_LOG="$STATE_DIR/log/slurmctld.log"
SLURMD_LOG="$STATE_DIR/log/slurmd.log"

log() { printf '[slurm-local] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

require_root() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (it writes $CONF_DIR and runs the daemons as root)"
}

# ---------------------------------------------------------------------------------------------------------------
# Packages (§2)
# ---------------------------------------------------------------------------------------------------------------
packages_present() {
    [[ -x /usr/sbin/slurmctld && -x /usr/sbin/slurmd && -x /usr/bin/sinfo && -x /usr/sbin/munged ]]
}

install_packages() {
    packages_present && return 0
    command -v apt-get >/dev/null || die "SLURM is not installed and apt-get is missing (Debian/Ubuntu expected)"
    log "installing slurmctld slurmd slurm-client munge (apt-get, --no-install-recommends)"
    # The postinst scripts try to start the daemons with Debian's default config. A policy-rc.d that exits 101
    # forbids that; create one only for the duration of the install if the host has none (§2).
    local own_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
    fi
    local rc=0
    {
        DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
                slurmctld slurmd slurm-client munge >/dev/null
    } || rc=$?
    if [[ $own_policy -eq 1 ]]; then rm -f /usr/sbin/policy-rc.d; fi
    [[ $rc -eq 0 ]] || die "apt-get install failed (rc=$rc)"
    packages_present || die "packages installed but slurmctld/slurmd/sinfo/munged are still missing"
}

# ---------------------------------------------------------------------------------------------------------------
# munge (§4)
# ---------------------------------------------------------------------------------------------------------------
munge_healthy() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
    install -d -o munge -g munge -m 0700 /etc/munge /var/log/munge
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/lib/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        log "creating /etc/munge/munge.key"
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile=/etc/munge/munge.key
        else
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
        fi
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
    munge_healthy && return 0
    # --force: a stale socket left by a killed munged must not block the start.
    runuser -u munge -- /usr/sbin/munged --force
    local i
    for ((i = 0; i < 100; i++)); do
        munge_healthy && return 0
        sleep 0.1
    done
    tail -n 20 /var/log/munge/munged.log >&2 2>/dev/null || true
    die "munged did not become healthy within 10 s ('munge -n | unmunge' fails)"
}

# ---------------------------------------------------------------------------------------------------------------
# Configuration (§3)
# ---------------------------------------------------------------------------------------------------------------
# Memory slurmd detects; configuring more than that drains the node, so we declare 90 % of it.
real_memory_mb() {
    local detected
    detected=$(/usr/sbin/slurmd -C | sed -n 's/.*RealMemory=\([0-9]\+\).*/\1/p' | head -n 1)
    [[ -n $detected ]] || die "could not read RealMemory from 'slurmd -C'"
    echo $((detected * 9 / 10))
}

render_slurm_conf() {
    local node=$1 cpus=$2 mem=$3 gres_node="" gres_types=""
    if [[ $GPUS -gt 0 ]]; then
        gres_types="GresTypes=gpu"
        gres_node=" Gres=gpu:$GPUS"
    fi
    cat <<EOF
# Written by scripts/slurm-local.sh — single-node loopback cluster for tests (docs: shared/docs/local-slurm.md).
ClusterName=$CLUSTER
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without a default, a bare sbatch/srun takes all node memory and jobs serialise.
DefMemPerCPU=1024
# Finished jobs stay visible to squeue for 1 h: required for Snakemake's squeue status command.
MinJobAge=3600
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
MessageTimeout=20
KillWait=5
InactiveLimit=0
MailProg=/bin/true
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=5
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE_DIR/log/jobcomp.txt
StateSaveLocation=$STATE_DIR/state
SlurmdSpoolDir=$STATE_DIR/spool
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$CTLD_LOG
SlurmdLogFile=$SLURMD_LOG
$gres_types
NodeName=$node NodeHostname=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem$gres_node State=UNKNOWN
PartitionName=$PARTITION Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
}

render_gres_conf() {
    local node=$1
    echo "# Written by scripts/slurm-local.sh: fake GPUs are char devices aliasing /dev/null (never opened)."
    echo "AutoDetect=off"
    if [[ $GPUS -gt 0 ]]; then
        # Count= without File= does not work: slurmd drops "file-less" GPUs and the node goes INVAL (§3).
        echo "NodeName=$node Name=gpu File=$STATE_DIR/dev/fakegpu[0-$((GPUS - 1))]"
    fi
}

render_cgroup_conf() {
    # CgroupPlugin=disabled does not exist in 22.05; autodetect loads cgroup/v1 but creates nothing (§3).
    printf 'CgroupPlugin=autodetect\nIgnoreSystemd=yes\n'
}

# install_if_changed CONTENT PATH: atomically replace PATH when CONTENT differs; return 0 if it changed.
install_if_changed() {
    local content=$1 path=$2 tmp
    if [[ -f $path ]] && [[ "$(cat "$path")" == "$content" ]]; then
        return 1
    fi
    tmp=$(mktemp "$path.XXXXXX")
    printf '%s\n' "$content" >"$tmp"
    chmod 0644 "$tmp"
    mv -f "$tmp" "$path"
    return 0
}

make_fake_gpus() {
    install -d -m 0755 "$STATE_DIR/dev"
    local i dev
    for ((i = 0; i < GPUS; i++)); do
        dev="$STATE_DIR/dev/fakegpu$i"
        [[ -c $dev ]] && continue
        rm -f "$dev"
        mknod -m 666 "$dev" c 1 3  # same major/minor as /dev/null
    done
}

# write_configs NODE: writes the three files; sets CONFIG_CHANGED=1 if any of them changed.
CONFIG_CHANGED=0
write_configs() {
    local node=$1 cpus mem
    cpus=$(nproc)
    mem=$(real_memory_mb)
    install -d -m 0755 "$CONF_DIR"
    if install_if_changed "$(render_slurm_conf "$node" "$cpus" "$mem")" "$CONF_DIR/slurm.conf"; then CONFIG_CHANGED=1; fi
    if install_if_changed "$(render_gres_conf "$node")" "$CONF_DIR/gres.conf"; then CONFIG_CHANGED=1; fi
    if install_if_changed "$(render_cgroup_conf)" "$CONF_DIR/cgroup.conf"; then CONFIG_CHANGED=1; fi
}

# ---------------------------------------------------------------------------------------------------------------
# Daemons (§5)
# ---------------------------------------------------------------------------------------------------------------
pid_alive() {
    local file=$1 pid
    [[ -s $file ]] || return 1
    pid=$(<"$file")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    # A zombie still answers kill -0 (PID 1 here does not reap), so also check the process state.
    kill -0 "$pid" 2>/dev/null || return 1
    [[ $(ps -o stat= -p "$pid" 2>/dev/null) != Z* ]]
}

# stop_pidfile FILE NAME: TERM, wait up to 15 s, then KILL; removes the pid file.
stop_pidfile() {
    local file=$1 name=$2 pid i
    if pid_alive "$file"; then
        pid=$(<"$file")
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 150; i++)); do
            pid_alive "$file" || break
            sleep 0.1
        done
        if pid_alive "$file"; then
            log "$name (pid $pid) ignored SIGTERM for 15 s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.2
        fi
    fi
    rm -f "$file"
}

node_state() { sinfo -h -N -n "$1" -o %t 2>/dev/null | head -n 1; }

node_ready() {
    case "$(node_state "$1")" in
        idle | mix | alloc | comp) return 0 ;;
        *) return 1 ;;
    esac
}

print_log_tails() {
    local f
    for f in "$CTLD_LOG" "$SLURMD_LOG"; do
        if [[ -f $f ]]; then
            log "---- tail of $f ----"
            tail -n 25 "$f" >&2
        fi
    done
}

wait_for_node() {
    local node=$1 deadline state last_resume=0 now
    deadline=$((SECONDS + TIMEOUT))
    while ((SECONDS < deadline)); do
        if ! pid_alive "$CTLD_PID"; then
            print_log_tails
            die "slurmctld died during start-up"
        fi
        state=$(node_state "$node")
        case "$state" in
            idle | mix | alloc | comp) return 0 ;;
            down* | drain* | drng* | inval* | fail*)
                # A state remembered from an earlier run; RESUME once every 2 s until the node reports in.
                now=$SECONDS
                if ((now - last_resume >= 2)); then
                    scontrol update NodeName="$node" State=RESUME >/dev/null 2>&1 || true
                    last_resume=$now
                fi
                ;;
        esac
        sleep 0.2
    done
    log "node $node state after ${TIMEOUT}s: '$(node_state "$node")'"
    sinfo -N -l >&2 2>/dev/null || true
    print_log_tails
    die "node $node did not become idle within ${TIMEOUT}s"
}

# Pid files named by the slurm.conf in force, which may come from a run with another STATE_DIR; read them before
# the config is rewritten so that such daemons are still stopped by pid.
PREV_CTLD_PID=""
PREV_SLURMD_PID=""
read_previous_pidfiles() {
    local conf="$CONF_DIR/slurm.conf"
    [[ -f $conf ]] || return 0
    PREV_CTLD_PID=$(sed -n 's/^SlurmctldPidFile=//p' "$conf" | tail -n 1)
    PREV_SLURMD_PID=$(sed -n 's/^SlurmdPidFile=//p' "$conf" | tail -n 1)
}

stop_slurm_daemons() {
    if pid_alive "$CTLD_PID" || { [[ -n $PREV_CTLD_PID ]] && pid_alive "$PREV_CTLD_PID"; }; then
        # A killed Snakemake leaves its jobs running; cancel them before shutting down (§5 stop order).
        scancel --user="$(id -un)" >/dev/null 2>&1 || true
        # Stops slurmd, then slurmctld, and saves state.
        scontrol shutdown >/dev/null 2>&1 || true
    fi
    local f
    for f in "$PREV_SLURMD_PID" "$SLURMD_PID"; do [[ -n $f ]] && stop_pidfile "$f" slurmd; done
    for f in "$PREV_CTLD_PID" "$CTLD_PID"; do [[ -n $f ]] && stop_pidfile "$f" slurmctld; done
    return 0
}

cmd_start() {
    require_root
    local t0=$SECONDS node
    node=$(hostname -s)
    install_packages
    start_munge
    install -d -m 0755 "$STATE_DIR" "$STATE_DIR/state" "$STATE_DIR/spool" "$STATE_DIR/log" "$STATE_DIR/run"
    make_fake_gpus
    read_previous_pidfiles
    write_configs "$node"
    if [[ $CONFIG_CHANGED -eq 0 ]] && pid_alive "$CTLD_PID" && pid_alive "$SLURMD_PID" && node_ready "$node"; then
        log "already running: node $node $(node_state "$node")"
        return 0
    fi
    if [[ $CONFIG_CHANGED -eq 1 ]]; then log "configuration written to $CONF_DIR"; fi
    stop_slurm_daemons
    log "starting slurmctld and slurmd (state in $STATE_DIR)"
    # -i: start even if the saved state does not match the (new) configuration.
    /usr/sbin/slurmctld -i || { print_log_tails; die "slurmctld failed to start"; }
    /usr/sbin/slurmd || { print_log_tails; die "slurmd failed to start"; }
    wait_for_node "$node"
    log "node $node is $(node_state "$node") after $((SECONDS - t0)) s (cpus=$(nproc), fake gpus=$GPUS)"
}

cmd_stop() {
    require_root
    local purge=0
    case "${1:-}" in
        --purge) purge=1 ;;
        "") ;;
        *) die "unknown stop option '$1' (expected --purge)" ;;
    esac
    if command -v scontrol >/dev/null; then
        read_previous_pidfiles
        stop_slurm_daemons
    fi
    if command -v munge >/dev/null && munge_healthy; then
        /usr/sbin/munged --stop >/dev/null 2>&1 || log "munged --stop failed (already gone?)"
    fi
    if [[ $purge -eq 1 ]]; then
        # Refuse to delete anything that is obviously not our scratch directory.
        [[ $STATE_DIR != / && -n $STATE_DIR ]] || die "refusing to purge STATE_DIR='$STATE_DIR'"
        rm -rf -- "$STATE_DIR"
        log "purged $STATE_DIR"
    fi
    log "stopped"
}

cmd_status() {
    local node rc=0
    node=$(hostname -s)
    if pid_alive "$CTLD_PID"; then echo "slurmctld: running (pid $(<"$CTLD_PID"))"; else echo "slurmctld: stopped"; rc=1; fi
    if pid_alive "$SLURMD_PID"; then echo "slurmd: running (pid $(<"$SLURMD_PID"))"; else echo "slurmd: stopped"; rc=1; fi
    if command -v munge >/dev/null && munge_healthy; then echo "munged: healthy"; else echo "munged: down"; rc=1; fi
    if [[ $rc -eq 0 ]]; then
        echo "node $node: $(node_state "$node")"
        node_ready "$node" || rc=1
        sinfo -N -o '%N %t %c %m %G' 2>/dev/null || true
    fi
    return $rc
}

main() {
    local cmd=${1:-}
    shift || true
    case "$cmd" in
        start) cmd_start "$@" ;;
        stop) cmd_stop "$@" ;;
        status) cmd_status "$@" ;;
        *)
            echo "usage: $0 start | stop [--purge] | status" >&2
            exit 2
            ;;
    esac
}

main "$@"
