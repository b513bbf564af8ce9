#!/bin/bash
# local-services.sh: every Jukebox stage as a networked service on this host, with N
# instances of each upsampler (and optionally of the top prior and the decoder).
#
#   local-services.sh start --mid 2 --bottom 2        start (and wait until loaded)
#   jukebox-job sample ... -o "$(local-services.sh endpoint)"
#   local-services.sh status                          processes + `jukebox status`
#   local-services.sh restart mid-1                   one instance, same command
#   local-services.sh stop                            SIGTERM, wait
set -u -o pipefail

prog=local-services.sh
# Idle OpenMP threads sleep (the stages default to it too; jb_threads.h).
[ -n "${OMP_WAIT_POLICY:-}${GOMP_SPINCOUNT:-}" ] || export OMP_WAIT_POLICY=PASSIVE
die() { echo "$prog: $*" >&2; exit 64; }

usage() {
    cat <<'USAGE'
usage: local-services.sh [options] start|stop|status|restart|endpoint|list [INSTANCE...]

Runs the stages of the Jukebox pipeline as networked services on this host, in the
reliable multi-instance layout: every stage serves its output (binds), the next stage's
instances connect to all instances above them, the top prior's input binds for
jukebox-job, and the decoder writes one run directory per job under --outdir.

commands:
  start [INSTANCE...]    start every instance (or those named) that is not running,
                         in parallel, and wait until each has loaded its model and
                         opened its sockets (READY) and every running instance is
                         linked to every running instance of the next stage; idempotent
  stop [INSTANCE...]     SIGTERM, wait (--stop-timeout, then SIGKILL); idempotent
  restart INSTANCE...    stop, then start with the same command (same name, spool, ports)
  status [INSTANCE...]   whether each process runs, then `jukebox status` of them all
  endpoint               the endpoint jobs are sent to (jukebox-job -o ENDPOINT)
  list                   name, pid, state, control endpoint, log of every instance

Instances are named top-I, mid-I, bottom-I and decoder-I (I from 0). Options are read
at `start` and kept in the state directory; later commands use those.

options:
  --state DIR          state directory: config, run/NAME.pid, log/NAME.log,
                       spool/NAME/, cmd/NAME, endpoints (default $JUKEBOX_STATE, else
                       ${XDG_RUNTIME_DIR:-/tmp}/jukebox-services)
  --models DIR         vqvae.safetensors, prior_level_{2,1,0}.safetensors (default
                       $JUKEBOX_MODELS, else the bundled demo model)
  --outdir DIR         where the decoder writes runs (default STATE/out)
  --top N --mid N --bottom N --decoders N
                       instances per stage (default 1, 2, 2, 1)
  --base-port P        first port (default 5555); see "ports" below
  --host ADDR          address the services bind and connect to (default 127.0.0.1;
                       '*' binds every interface, connections then go to 127.0.0.1)
  --threads N          compute threads per instance (default: a share of this host's
                       cores, cores / instances, at least 1; the instances' idle
                       threads sleep: OMP_WAIT_POLICY=PASSIVE unless the environment
                       sets OMP_WAIT_POLICY or GOMP_SPINCOUNT)
  --device DEV         cpu, cuda, cuda:N (default cpu)
  --heartbeat MS       heartbeat interval of the links (default: the stages' own)
  --peer-timeout MS    a silent peer is dead after this (default: the stages' own)
  --no-spool           no --spool directories (jobs then restart from scratch)
  --stage-args "ARGS"  more arguments for the three prior stages (e.g. --max-batch 4)
  --start-timeout S    wait this long for READY, and as long again for the links
                       (default 600)
  --stop-timeout S     wait this long after SIGTERM before SIGKILL (default 60)
  -h, --help           this text

ports (P = --base-port; I = instance 0..9):
  P+I      top-I input (jobs)          P+10+I   top-I output
  P+20+I   mid-I output                P+30+I   bottom-I output
  P+40+I   control of top-I            P+50+I, P+60+I, P+70+I: of mid-I, bottom-I,
                                       decoder-I
Stages without the reliable link (no --peer-timeout in their --help) run one instance
per stage over PUSH/PULL; more are refused, since PUSH/PULL would split a job.

exit codes: 0 done; 64 bad usage; 66 model missing; 69 an instance failed to start
or is not running (status); 70 internal error.
USAGE
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bindir=""
for d in "$here" "$here/../build/bin" "$here/../bin" "$here/../../../bin"; do
    [ -x "$d/jukebox-prior-top" ] && { bindir=$(cd "$d" && pwd); break; }
done
[ -n "$bindir" ] || bindir=$(dirname "$(command -v jukebox-prior-top 2>/dev/null || echo /nonexistent/x)")
[ -x "$bindir/jukebox-prior-top" ] || { echo "$prog: cannot find the stage executables (run make)" >&2; exit 66; }

state=${JUKEBOX_STATE:-${XDG_RUNTIME_DIR:-/tmp}/jukebox-services}
cmd="" names=()
declare -A opt=()
while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --state) state=${2:?--state needs a value}; shift 2 ;;
        --no-spool) opt[spool]=0; shift ;;
        --models|--outdir|--top|--mid|--bottom|--decoders|--base-port|--host|--threads|--device|\
        --heartbeat|--peer-timeout|--stage-args|--start-timeout|--stop-timeout)
            [ $# -ge 2 ] || die "$1 needs a value"
            opt[${1#--}]=$2; shift 2 ;;
        -*) die "unknown option '$1' (see --help)" ;;
        *) if [ -z "$cmd" ]; then cmd=$1; else names+=("$1"); fi; shift ;;
    esac
done
[ -n "$cmd" ] || { usage >&2; exit 64; }
case "$cmd" in start|stop|status|restart|endpoint|list) ;; *) die "unknown command '$cmd' (see --help)" ;; esac

# ---- configuration: defaults < saved config < this command line (start only)
declare -A cfg=([models]="${JUKEBOX_MODELS:-}" [outdir]="" [top]=1 [mid]=2 [bottom]=2 [decoders]=1
                [base-port]=5555 [host]=127.0.0.1 [threads]=auto [device]=cpu [heartbeat]=""
                [peer-timeout]="" [spool]=1 [stage-args]="" [start-timeout]=600 [stop-timeout]=60)
if [ -f "$state/config" ]; then
    while IFS='=' read -r k v; do [ -n "$k" ] && cfg[$k]=$v; done < "$state/config"
fi
if [ "$cmd" != start ] && [ ${#opt[@]} -gt 0 ] && [ -f "$state/config" ]; then
    for k in "${!opt[@]}"; do
        case "$k" in start-timeout|stop-timeout) ;;
            *) [ "${opt[$k]}" = "${cfg[$k]}" ] || die "--$k: the services were started with other settings; stop them first" ;;
        esac
    done
fi
for k in "${!opt[@]}"; do cfg[$k]=${opt[$k]}; done
[ "${cfg[threads]}" = auto ] || [[ "${cfg[threads]}" =~ ^[1-9][0-9]*$ ]] ||
    die "--threads ${cfg[threads]}: expected a count of at least 1"
for k in top mid bottom decoders base-port start-timeout stop-timeout; do
    [[ "${cfg[$k]}" =~ ^[0-9]+$ ]] || die "--$k ${cfg[$k]}: expected a number"
done
for k in top mid bottom decoders; do
    [ "${cfg[$k]}" -ge 1 ] && [ "${cfg[$k]}" -le 10 ] || die "--$k ${cfg[$k]}: 1 to 10 instances"
done
for k in heartbeat peer-timeout; do
    [ -z "${cfg[$k]}" ] || [[ "${cfg[$k]}" =~ ^[0-9]+$ ]] || die "--$k ${cfg[$k]}: expected milliseconds"
done
[ "${cfg[base-port]}" -ge 1 ] && [ "${cfg[base-port]}" -le 65455 ] || die "--base-port ${cfg[base-port]}: 1..65455"
if [ -z "${cfg[models]}" ]; then
    for d in "$here/../models/default" "$here/../share/jukebox/models/default" "$here/../../../share/jukebox/models/default"; do
        [ -f "$d/vqvae.safetensors" ] && { cfg[models]=$(cd "$d" && pwd); break; }
    done
fi
[ -n "${cfg[outdir]}" ] || cfg[outdir]=$state/out

P=${cfg[base-port]}
bindhost=${cfg[host]}
connhost=$bindhost; [ "$bindhost" = '*' ] || [ "$bindhost" = 0.0.0.0 ] && connhost=127.0.0.1

# What the stages support: the reliable link (comma lists, --name, heartbeats, control)
# and the spool are detected from their --help, so this script runs on either.
help_top=$("$bindir/jukebox-prior-top" --help 2>/dev/null)
help_dec=$("$bindir/jukebox-decoder" --help 2>/dev/null)
has() { grep -q -- "$2" <<<"$1"; }
link=0; has "$help_top" --peer-timeout && link=1
spool=0; [ "${cfg[spool]}" = 1 ] && has "$help_top" --spool && spool=1

# ---- the instances
stage_of() { case "$1" in top-*) echo prior-top ;; mid-*) echo upsampler-mid ;;
             bottom-*) echo upsampler-bottom ;; decoder-*) echo decoder ;; esac; }
all_names() {
    local i
    for i in $(seq 0 $((cfg[top] - 1))); do echo "top-$i"; done
    for i in $(seq 0 $((cfg[mid] - 1))); do echo "mid-$i"; done
    for i in $(seq 0 $((cfg[bottom] - 1))); do echo "bottom-$i"; done
    for i in $(seq 0 $((cfg[decoders] - 1))); do echo "decoder-$i"; done
}
ep() { echo "tcp://$connhost:$1"; }
bind_ep() { echo "@tcp://$bindhost:$1"; }
# connect list: ">tcp://h:p0,>tcp://h:p1,..." for COUNT instances from port FIRST
conn_list() {
    local first=$1 n=$2 i s=""
    for i in $(seq 0 $((n - 1))); do s+="${s:+,}>$(ep $((first + i)))"; done
    echo "$s"
}
control_port() {
    local n=$1 i=${1##*-}
    case "$n" in top-*) echo $((P + 40 + i)) ;; mid-*) echo $((P + 50 + i)) ;;
        bottom-*) echo $((P + 60 + i)) ;; decoder-*) echo $((P + 70 + i)) ;; esac
}

# The command of one instance, as an array in CMD.
build_cmd() {
    local n=$1 i=${1##*-} s m in out
    s=$(stage_of "$n")
    case "$n" in
        top-*) m=prior_level_2; in=$(bind_ep $((P + i))); out=$(bind_ep $((P + 10 + i))) ;;
        mid-*) m=prior_level_1; in=$(conn_list $((P + 10)) "${cfg[top]}"); out=$(bind_ep $((P + 20 + i))) ;;
        bottom-*) m=prior_level_0; in=$(conn_list $((P + 20)) "${cfg[mid]}"); out=$(bind_ep $((P + 30 + i))) ;;
        decoder-*) m=vqvae; in=$(conn_list $((P + 30)) "${cfg[bottom]}") ;;
    esac
    # Threads: the instances of this host share its cores, none oversubscribes it.
    th=${cfg[threads]}
    if [ "$th" = auto ]; then
        th=$(( $(nproc 2>/dev/null || echo 1) / (cfg[top] + cfg[mid] + cfg[bottom] + cfg[decoders]) ))
        [ "$th" -ge 1 ] || th=1
    fi
    CMD=("$bindir/jukebox-$s" --model "${cfg[models]}/$m.safetensors" --in "$in"
         --threads "$th" --device "${cfg[device]}")
    if [ "$s" = decoder ]; then
        CMD+=(--outdir "${cfg[outdir]}")
    else
        CMD+=(--out "$out")
        # shellcheck disable=SC2206
        [ -n "${cfg[stage-args]}" ] && CMD+=(${cfg[stage-args]})
    fi
    if [ $link = 1 ]; then
        CMD+=(--name "$n" --control "@tcp://$bindhost:$(control_port "$n")")
        [ -n "${cfg[heartbeat]}" ] && CMD+=(--heartbeat "${cfg[heartbeat]}")
        [ -n "${cfg[peer-timeout]}" ] && CMD+=(--peer-timeout "${cfg[peer-timeout]}")
    fi
    [ $spool = 1 ] && CMD+=(--spool "$state/spool/$n")
    return 0
}

pid_of() { local f=$state/run/$1.pid; [ -f "$f" ] && cat "$f" 2>/dev/null; }
# Running: the pid file's process exists, is not a zombie and is still this instance. A
# process in the middle of exiting has an empty command line already: still running (stop
# returned before such a process was gone once).
alive() {
    local p cmd; p=$(pid_of "$1") || return 1
    [ -n "$p" ] && [ -d "/proc/$p" ] || return 1
    [ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" != Z ] || return 1
    cmd=$(tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null)
    [ -z "$cmd" ] && [ -d "/proc/$p" ] && return 0
    grep -q -- "$(stage_of "$1")" <<<"$cmd" || return 1
}

check_names() {
    local n known
    known=" $(all_names | tr '\n' ' ') "
    for n in "$@"; do [[ "$known" == *" $n "* ]] || die "no instance '$n' (instances:${known% })"; done
}

start_one() {   # name: prints a line; returns the launcher's exit code
    local n=$1 rc pid
    if alive "$n"; then echo "$n: already running (pid $(pid_of "$n"))"; return 0; fi
    build_cmd "$n"
    mkdir -p "$state/run" "$state/log" "$state/cmd"
    [ $spool = 1 ] && mkdir -p "$state/spool/$n"
    printf '%q ' "${CMD[@]}" > "$state/cmd/$n"; echo >> "$state/cmd/$n"
    echo "--- $(date -u +%FT%TZ) start: $(cat "$state/cmd/$n")" >> "$state/log/$n.log"
    pid=$("$bindir/jukebox-launch" --log "$state/log/$n.log" --pidfile "$state/run/$n.pid" \
          --timeout "${cfg[start-timeout]}" -- "${CMD[@]}"); rc=$?
    if [ $rc = 0 ]; then
        echo "$n: ready (pid $pid)"
    else
        echo "$n: failed to start (exit $rc); last lines of $state/log/$n.log:" >&2
        tail -n 5 "$state/log/$n.log" | sed 's/^/    /' >&2
    fi
    return $rc
}

stop_some() {   # names...: SIGTERM all, wait, SIGKILL the ones left
    local n p left=() end
    for n in "$@"; do
        if alive "$n"; then kill -TERM "$(pid_of "$n")" 2>/dev/null; left+=("$n")
        else rm -f "$state/run/$n.pid"; fi
    done
    end=$((SECONDS + cfg[stop-timeout]))
    while [ ${#left[@]} -gt 0 ] && [ $SECONDS -lt $end ]; do
        local still=()
        for n in "${left[@]}"; do alive "$n" && still+=("$n"); done
        left=("${still[@]+"${still[@]}"}")
        [ ${#left[@]} -gt 0 ] && sleep 0.2
    done
    for n in "${left[@]+"${left[@]}"}"; do
        p=$(pid_of "$n")
        echo "$n: still running ${cfg[stop-timeout]} s after SIGTERM; SIGKILL" >&2
        kill -KILL "$p" 2>/dev/null
    done
    for n in "$@"; do rm -f "$state/run/$n.pid"; echo "$n: stopped"; done
}

# Until every running instance's output link sees every running instance of the next
# stage (READY means sockets open, not yet introduced): a job sent after `start` can then
# go to any instance. Bounded by --start-timeout.
# The running instances are counted again every 2 s: one that dies meanwhile is not
# waited for.
wait_linked() {
    [ $link = 1 ] && [ -x "$bindir/jukebox-status" ] || return 0
    local n eps end=$((SECONDS + cfg[start-timeout]))
    while :; do
        eps=()
        while read -r n; do
            alive "$n" && eps+=("tcp://$connhost:$(control_port "$n")")
        done < <(all_names)
        [ ${#eps[@]} -gt 1 ] || return 0
        "$bindir/jukebox-status" --wait-linked 2 --timeout 1000 "${eps[@]}" 2> "$state/.linked" &&
            { rm -f "$state/.linked"; return 0; }
        if [ $SECONDS -ge $end ]; then
            cat "$state/.linked" >&2; rm -f "$state/.linked"
            return 1
        fi
    done
}

write_state() {
    mkdir -p "$state"
    { for k in "${!cfg[@]}"; do echo "$k=${cfg[$k]}"; done; } | sort > "$state/config.tmp" &&
        mv "$state/config.tmp" "$state/config"
    {
        local j=""
        for i in $(seq 0 $((cfg[top] - 1))); do j+="${j:+,}$(ep $((P + i)))"; done
        echo "jobs $j"
        if [ $link = 1 ]; then
            while read -r n; do echo "control $n tcp://$connhost:$(control_port "$n")"; done < <(all_names)
        fi
    } > "$state/endpoints"
}

case "$cmd" in
    endpoint)
        [ -f "$state/endpoints" ] || { echo "$prog: no services under $state (start them first)" >&2; exit 69; }
        awk '$1 == "jobs" {print $2}' "$state/endpoints" ;;
    list)
        while read -r n; do
            if alive "$n"; then st="running pid $(pid_of "$n")"; else st="stopped"; fi
            c=-; [ $link = 1 ] && c=tcp://$connhost:$(control_port "$n")
            printf '%-10s %-22s %-26s %s\n' "$n" "$st" "$c" "$state/log/$n.log"
        done < <(all_names) ;;
    start)
        if [ $link = 0 ] && [ $((cfg[top] + cfg[mid] + cfg[bottom] + cfg[decoders])) != 4 ]; then
            die "these stages have no reliable link (no --peer-timeout): one instance per stage only (--top 1 --mid 1 --bottom 1 --decoders 1)"
        fi
        for f in vqvae prior_level_2 prior_level_1 prior_level_0; do
            [ -f "${cfg[models]}/$f.safetensors" ] || { echo "$prog: ${cfg[models]}/$f.safetensors: missing (--models DIR)" >&2; exit 66; }
        done
        check_names "${names[@]+"${names[@]}"}"
        [ ${#names[@]} -gt 0 ] || mapfile -t names < <(all_names)
        write_state
        mkdir -p "${cfg[outdir]}"
        pids=() rc=0
        for n in "${names[@]}"; do start_one "$n" & pids+=($!); done
        for p in "${pids[@]}"; do wait "$p" || rc=69; done
        [ $rc = 0 ] && { wait_linked || rc=69; }
        exit $rc ;;
    stop)
        check_names "${names[@]+"${names[@]}"}"
        [ ${#names[@]} -gt 0 ] || mapfile -t names < <(all_names)
        stop_some "${names[@]}" ;;
    restart)
        [ ${#names[@]} -gt 0 ] || die "restart: name the instances (e.g. mid-1)"
        check_names "${names[@]}"
        stop_some "${names[@]}"
        rc=0
        for n in "${names[@]}"; do start_one "$n" || rc=69; done
        [ $rc = 0 ] && { wait_linked || rc=69; }
        exit $rc ;;
    status)
        check_names "${names[@]+"${names[@]}"}"
        [ ${#names[@]} -gt 0 ] || mapfile -t names < <(all_names)
        rc=0 eps=()
        for n in "${names[@]}"; do
            if alive "$n"; then echo "$n: running (pid $(pid_of "$n"))"; else echo "$n: not running"; rc=69; fi
            [ $link = 1 ] && eps+=("tcp://$connhost:$(control_port "$n")")
        done
        if [ ${#eps[@]} -gt 0 ] && [ -x "$bindir/jukebox-status" ]; then
            echo
            "$bindir/jukebox-status" "${eps[@]}" || rc=69
        fi
        exit $rc ;;
esac
