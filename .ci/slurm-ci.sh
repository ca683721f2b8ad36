#!/usr/bin/env bash
# slurm-ci.sh -- a real, throwaway, single-node SLURM cluster for tests and CI.
#
#   bash .ci/slurm-ci.sh up       install what is missing, start the daemons, smoke-test; idempotent
#   bash .ci/slurm-ci.sh status   which of our daemons run, and sinfo
#   bash .ci/slurm-ci.sh down     cancel jobs, stop OUR daemons (by pid file), wipe state; idempotent
#
# Debian 12 packages (Slurm 22.05), run as root, no systemd needed (daemons are started by hand).
# Daemons: munged, mariadbd + slurmdbd (so `sacct` works: submitit reads job states from it),
# slurmctld, slurmd. Node `localhost`, one partition, no cgroups; every address is localhost
# (MariaDB: unix socket only). Design notes and pitfalls: docs "Real single-node SLURM" (facts.md).
#
# Settings (environment):
#   SLURM_CI_DIR        state, logs, pid files                    (default /tmp/slurm-ci)
#   SLURM_CI_PARTITION  name of the partition to create           (default debug)
#   SLURM_CI_DBD        1 = slurmdbd + MariaDB (sacct works), 0 = no accounting   (default 1)
#
# The script exports nothing: callers set SLURM_CI_PARTITION for the tests themselves.
# Client commands (sbatch, srun, sacct, ...) find the cluster through /etc/slurm/slurm.conf, which `up`
# writes (a foreign slurm.conf is saved aside and put back by `down`).
set -euo pipefail

DIR="${SLURM_CI_DIR:-/tmp/slurm-ci}"
PARTITION="${SLURM_CI_PARTITION:-debug}"
WITH_DBD="${SLURM_CI_DBD:-1}"
ETC=/etc/slurm
MARK="# written by emloc .ci/slurm-ci.sh"
PORTS=(6817 6818 6819)                      # slurmctld, slurmd, slurmdbd
SOCK=/run/mysqld/mysqld.sock                # MariaDB's only endpoint (the client library's default path,
                                            # which slurmdbd uses: its conf has no socket setting)
export DEBIAN_FRONTEND=noninteractive

say() { printf '[slurm-ci] %s\n' "$*"; }
fail() {
  printf '[slurm-ci] ERROR: %s\n' "$*" >&2
  local f
  for f in "$DIR"/log/*; do [ -f "$f" ] && printf -- '--- tail %s\n%s\n' "$f" "$(tail -n 15 "$f")" >&2; done
  exit 1
}

# ---- timing (bash 5 EPOCHREALTIME, microseconds; no bc needed) ---------------------------------------
now_us() { echo "${EPOCHREALTIME/[.,]/}"; }
T0=$(now_us); TLAST=$T0
secs() { local d=$(( $1 / 100000 )); printf '%d.%d' $(( d / 10 )) $(( d % 10 )); }
lap() {  # lap LABEL: time since the previous lap
  local t; t=$(now_us); printf '[slurm-ci]   %-26s %6s s\n' "$1" "$(secs $(( t - TLAST )))"; TLAST=$t
}
total() { printf '[slurm-ci] %s took %s s\n' "$1" "$(secs $(( $(now_us) - T0 )))"; }

# ---- process helpers --------------------------------------------------------------------------------
pidfile() { echo "$DIR/run/$1.pid"; }
# running NAME: our pid file for NAME names a live process whose command is NAME
running() {
  local f p; f=$(pidfile "$1"); [ -s "$f" ] || return 1
  p=$(<"$f"); [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$1" ] && live "$p"
}
# live PID: PID exists and is not a zombie (our daemons are re-parented to PID 1 once `up` exits, and
# `kill -0` also succeeds on an exited, not yet reaped process)
live() { local st; st=$(sed -n 's/^[0-9]* (.*) \([A-Z]\) .*/\1/p' "/proc/$1/stat" 2>/dev/null) && [ -n "$st" ] && [ "$st" != Z ]; }
# stop NAME: TERM the pid in our pid file (only if it still is NAME), wait up to 10 s, then KILL
stop() {
  local f p; f=$(pidfile "$1")
  if running "$1"; then
    local t0; t0=$(now_us); p=$(<"$f"); kill "$p" 2>/dev/null || true
    for _ in $(seq 100); do live "$p" || break; sleep 0.1; done
    if live "$p"; then say "$1 ($p) ignored TERM: KILL"; kill -9 "$p" 2>/dev/null || true; fi
    say "stopped $1 (pid $p) in $(secs $(( $(now_us) - t0 ))) s"
  fi
  rm -f "$f"
}
# launch NAME CMD...: start a foreground-mode daemon in its own session, every fd redirected (so that
# `slurm-ci.sh up | cat` returns), and record its pid
launch() {
  local name=$1; shift
  setsid "$@" </dev/null >"$DIR/log/$name.out" 2>&1 &
  echo $! >"$(pidfile "$name")"
}
# until_ok SECONDS CMD...: retry CMD every 0.25 s
until_ok() {
  local end=$(( $(date +%s) + $1 )); shift
  until "$@" >/dev/null 2>&1; do [ "$(date +%s)" -lt "$end" ] || return 1; sleep 0.25; done
}
# listening PORT: some process listens on TCP PORT (any address, v4 or v6), read from /proc
listening() {
  local hex; hex=$(printf ':%04X' "$1")
  awk -v p="$hex" 'NR > 1 && $4 == "0A" && substr($2, length($2) - 4) == p { found = 1 } END { exit !found }' \
    /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# ---- install ----------------------------------------------------------------------------------------
packages() {
  local want=(slurmctld slurmd slurm-client munge) missing=() p
  [ "$WITH_DBD" = 1 ] && want+=(slurmdbd mariadb-server)
  for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing ${missing[*]}"
  # postinst scripts cannot start services without systemd ("policy-rc.d denied execution of start"):
  # expected, the daemons are started below
  { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; } \
    >"$DIR/log/apt.log" 2>&1 || { tail -n 30 "$DIR/log/apt.log" >&2; fail "apt-get install failed"; }
}

# ---- configuration ----------------------------------------------------------------------------------
node_line() {
  # the hardware line from `slurmd -C` (so no "reconfigured socket/core boundaries"), renamed to localhost
  # (independent of the hostname) and with RealMemory at 90 %: more than slurmd sees => node INVAL/DRAIN
  local hw mem
  hw=$(slurmd -C | head -n 1)
  mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
  sed -e 's/^NodeName=[^ ]*/NodeName=localhost/' -e "s/RealMemory=[0-9]*/RealMemory=$(( mem * 9 / 10 ))/" <<<"$hw"
}

write_confs() {
  mkdir -p "$ETC"
  if [ -f "$ETC/slurm.conf" ] && ! grep -qF "$MARK" "$ETC/slurm.conf" && [ ! -f "$ETC/slurm.conf.pre-slurm-ci" ]; then
    say "saving the existing $ETC/slurm.conf as slurm.conf.pre-slurm-ci"
    mv "$ETC/slurm.conf" "$ETC/slurm.conf.pre-slurm-ci"
  fi
  local accounting
  if [ "$WITH_DBD" = 1 ]; then
    accounting="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/linux"
  else
    accounting="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
  fi
  cat >"$ETC/slurm.conf" <<EOF
$MARK (state in $DIR); regenerated on every 'up'
ClusterName=ci
SlurmctldHost=localhost
SlurmctldPort=6817
SlurmdPort=6818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$DIR/state/slurmctld
SlurmdSpoolDir=$DIR/state/slurmd
SlurmctldPidFile=$DIR/run/slurmctld.daemon.pid
SlurmdPidFile=$DIR/run/slurmd.daemon.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
# cgroup plugins cannot work in this kind of sandbox ("cgroup namespace 'freezer' not mounted"):
# track processes by /proc and bind nothing; no memory enforcement
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
$accounting
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
InactiveLimit=0
KillWait=5
MinJobAge=300
SlurmdTimeout=60
Waittime=0
$(node_line) State=UNKNOWN
PartitionName=$PARTITION Nodes=localhost Default=YES MaxTime=INFINITE State=UP DefMemPerCPU=500
EOF
  if [ "$WITH_DBD" = 1 ]; then
    # slurmdbd refuses a conf that is not 0600 and owned by SlurmUser
    install -m 0600 -o root -g root /dev/null "$ETC/slurmdbd.conf"
    cat >"$ETC/slurmdbd.conf" <<EOF
$MARK
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=slurmci
PidFile=$DIR/run/slurmdbd.daemon.pid
LogFile=$DIR/log/slurmdbd.log
DebugLevel=info
EOF
  fi
}

# ---- daemons ----------------------------------------------------------------------------------------
start_munge() {
  # Use a munged that already answers (e.g. the machine's own), but do not take ownership of it.
  if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    running munged || say "using the munged that is already running (not ours: 'down' leaves it alone)"
    return 0
  fi
  # /run/munge is made by systemd-tmpfiles on a normal boot
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
  [ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key && chmod 0600 /etc/munge/munge.key
  # setpriv execs (runuser would stay around as the parent), so the recorded pid is munged's own
  launch munged setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged --foreground
  until_ok 10 bash -c 'munge -n | unmunge' || fail "munged did not answer"
}

start_mariadb() {
  # The package's datadir (/var/lib/mysql, initialised by its postinst); refuse if another server owns it.
  mariadb-admin --no-defaults --socket="$SOCK" ping >/dev/null 2>&1 &&
    fail "a MariaDB not started from $DIR already answers on $SOCK"
  [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql \
    >"$DIR/log/mariadb-install.log" 2>&1 || fail "mariadb-install-db failed"
  # the pid file must be writable by the mysql user ("can't create PID file: Permission denied")
  install -d -o mysql -g mysql -m 0755 /run/mysqld
  # unix socket only, no TCP listener at all; its log goes to stderr = $DIR/log/mariadbd.out
  # (no --log-error under $DIR: mariadbd runs as mysql and cannot create files there)
  launch mariadbd /usr/sbin/mariadbd --no-defaults --user=mysql --datadir=/var/lib/mysql --skip-networking \
    --socket="$SOCK" --pid-file=/run/mysqld/mariadbd-slurm-ci.pid \
    --innodb-buffer-pool-size=256M --innodb-lock-wait-timeout=900
  until_ok 60 mariadb-admin --no-defaults --socket="$SOCK" ping || fail "mariadbd did not answer"
  # fresh accounting each 'up': job ids restart at 1 with a fresh StateSaveLocation, old rows would alias
  mariadb --no-defaults --socket="$SOCK" -u root -e "
    DROP DATABASE IF EXISTS slurm_acct_db; CREATE DATABASE slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmci';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;" || fail "accounting DB setup failed"
}

cluster_healthy() {
  running slurmctld && running slurmd && scontrol ping 2>/dev/null | grep -q UP &&
    sinfo -h -p "$PARTITION" -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'
}

# ---- actions ----------------------------------------------------------------------------------------
up() {
  mkdir -p "$DIR/log" "$DIR/run"
  if cluster_healthy && { [ "$WITH_DBD" != 1 ] || running slurmdbd; }; then
    say "already up (state in $DIR); 'down' then 'up' for a fresh cluster"; sinfo; return 0
  fi
  stop_daemons                                   # a half-started run of ours, if any
  packages; lap "packages"
  local port
  for port in "${PORTS[@]}"; do
    listening "$port" && fail "TCP port $port is already in use by a process not started from $DIR
  (another slurm-ci.sh 'up' with a different SLURM_CI_DIR, or a system Slurm?). Refusing to start."
  done
  rm -rf "$DIR/state" "$DIR/log"/*.log "$DIR/log"/*.out
  mkdir -p "$DIR/state/slurmctld" "$DIR/state/slurmd"       # empty state: no stale jobs, DRAIN reasons
  write_confs
  start_munge; lap "munged"
  if [ "$WITH_DBD" = 1 ]; then
    start_mariadb; lap "mariadbd + accounting DB"
    launch slurmdbd /usr/sbin/slurmdbd -D
    until_ok 30 sacctmgr -n list cluster || fail "slurmdbd did not answer"
    lap "slurmdbd"
  fi
  launch slurmctld /usr/sbin/slurmctld -D -i     # -i: no state files yet, fine
  until_ok 30 bash -c 'scontrol ping | grep -q UP' || fail "slurmctld did not answer"
  lap "slurmctld"
  launch slurmd /usr/sbin/slurmd -D -N localhost
  until_ok 60 bash -c "sinfo -h -n localhost -o %T | grep -qx idle" || fail "node not idle: $(sinfo -R 2>&1)"
  lap "slurmd (node idle)"
  timeout 60 srun -p "$PARTITION" -t 1 -J slurm-ci-smoke true </dev/null || fail "srun smoke test failed"
  lap "srun smoke test"
  say "up: cluster 'ci', partition '$PARTITION', state in $DIR"
  sinfo
  total "up"
}

stop_daemons() {
  local n
  for n in slurmd slurmctld slurmdbd mariadbd munged; do stop "$n"; done
}

down() {
  if running slurmctld; then
    scancel --full --user=root 2>/dev/null || true
    until_ok 15 bash -c '[ -z "$(squeue -h -o %i)" ]' || say "jobs still listed at teardown"
  fi
  stop_daemons
  rm -rf "$DIR/state" "$DIR/run"
  if [ -f "$ETC/slurm.conf.pre-slurm-ci" ]; then
    mv -f "$ETC/slurm.conf.pre-slurm-ci" "$ETC/slurm.conf"; say "restored the previous $ETC/slurm.conf"
  fi
  say "down (logs kept in $DIR/log)"
  total "down"
}

status() {
  local n
  for n in munged mariadbd slurmdbd slurmctld slurmd; do
    if running "$n"; then echo "$n: running (pid $(<"$(pidfile "$n")"))"; else echo "$n: not running (ours)"; fi
  done
  if cluster_healthy; then sinfo; else echo "cluster: down"; return 3; fi
}

[ "$(id -u)" = 0 ] || fail "run as root (installs packages, runs the daemons)"
case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
