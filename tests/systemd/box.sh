#!/usr/bin/env bash
# box.sh - boot a real systemd (Debian 12 "bookworm", systemd 252, or BOX_SUITE=trixie: Debian 13,
# systemd 257) in a systemd-nspawn container, on any Linux host where we are root (the host's PID 1
# need not be systemd).
#
#   box.sh up               build/extract the rootfs if needed, boot it, wait until systemd is up
#   box.sh exec CMD [ARG]   run CMD inside the box (nsenter, clean env); its exit code is returned
#   box.sh sh 'SCRIPT'      exec /bin/sh -c 'SCRIPT'
#   box.sh status           exit 0 if the box is up
#   box.sh logs             the container's console output
#   box.sh down             orderly poweroff; then kill what is left in OUR cgroup only; remove it
#   box.sh rootfs           only build the rootfs and its cached tarball (e.g. to warm a CI cache)
#   box.sh reset            down, then delete the rootfs (the next `up` re-extracts the tarball)
#
# Settings (environment, all optional):
#   BOX_NAME     container name (default svcengine-test)
#   BOX_DIR      state dir: rootfs, tarball cache, logs (default /var/lib/svcengine-testbox)
#   BOX_SUITE    Debian suite (default bookworm; trixie works too). Give the same BOX_SUITE to every
#                command of a box; a box whose rootfs came from another suite or package list is
#                rebuilt at the next `up`
#   BOX_MIRROR   Debian mirror (default: the first non-security source in the host's apt configuration)
#   BOX_SHARE    host dir bind-mounted read-write at /share in the box (default $BOX_DIR/$BOX_NAME/share)
#   BOX_BOOT_TIMEOUT  seconds to wait for the box's systemd (default 90)
#
# The box has its own network namespace (loopback only) and a pure cgroup v2 hierarchy inside.
# Changes inside the box persist across down/up until `reset`.
set -euo pipefail

BOX_NAME=${BOX_NAME:-svcengine-test}
BOX_DIR=${BOX_DIR:-/var/lib/svcengine-testbox}
BOX_SUITE=${BOX_SUITE:-bookworm}
BOX_BOOT_TIMEOUT=${BOX_BOOT_TIMEOUT:-90}
case "$BOX_NAME" in (*[!A-Za-z0-9-]*|-*|"") echo "box: bad BOX_NAME '$BOX_NAME'" >&2; exit 2;; esac

STATE=$BOX_DIR/$BOX_NAME
ROOTFS=$STATE/rootfs
BOX_SHARE=${BOX_SHARE:-$STATE/share}
PKGS=systemd,systemd-sysv,dbus,procps,python3,python3-pip,python3-daemon,python3-sdnotify,python3-setproctitle,python3-pytest
TARBALL=$BOX_DIR/rootfs-$BOX_SUITE-$(printf '%s' "$BOX_SUITE $PKGS" | sha256sum | cut -c1-10).tar.zst
PIDFILE=$STATE/nspawn.pid
CONSOLE=$STATE/console.log
PATH_IN=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# our own cgroup(s): nspawn is moved there before it starts, so whatever it leaves is findable
CG=svcengine-box-$BOX_NAME
if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then
  CGDIRS="/sys/fs/cgroup/$CG"
else  # hybrid host: v2 at unified/, v1 name=systemd at systemd/
  CGDIRS="/sys/fs/cgroup/unified/$CG"
  [ -d /sys/fs/cgroup/systemd ] && CGDIRS="$CGDIRS /sys/fs/cgroup/systemd/$CG"
fi

log() { echo "box[$BOX_NAME]: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# The host's Debian mirror, from its apt sources (deb822 or one-line format); never hard-coded.
host_mirror() {
  local all
  all=$({ awk '/^URIs:/ {for (i = 2; i <= NF; i++) print $i}' /etc/apt/sources.list.d/*.sources
          # one-line format: deb [opt=... ...] URI suite...
          awk '$1 == "deb" {i = 2; if ($2 ~ /^\[/) while (i <= NF && $i !~ /\]$/) i++; if ($2 ~ /^\[/) i++; print $i}' \
            /etc/apt/sources.list /etc/apt/sources.list.d/*.list
        } 2>/dev/null | grep -v -- -security || true)
  # prefer a URI that looks like a Debian archive; else the first one
  { grep -m1 -E '/debian/?$' <<<"$all" || head -n1 <<<"$all"; } | grep . || true
}

need_tools() {
  local missing=()
  command -v systemd-nspawn >/dev/null || missing+=(systemd-container)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v zstd >/dev/null || missing+=(zstd)
  command -v nsenter >/dev/null || missing+=(util-linux)
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing host packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq "${missing[@]}" </dev/null >/dev/null 2>&1 ||
    { apt-get update -qq </dev/null >/dev/null && apt-get install -y -qq "${missing[@]}" </dev/null >/dev/null; }
}

make_rootfs() {
  need_tools
  mkdir -p "$STATE"
  if [ -x "$ROOTFS/lib/systemd/systemd" ]; then
    # made from the tarball of today's suite and package list: keep it (and what tests left)
    [ "$(cat "$STATE/rootfs.from" 2>/dev/null)" = "$TARBALL" ] && return 0
    [ -z "$(nspawn_pid)" ] || { log "warning: the box runs an outdated rootfs (box.sh reset)"; return 0; }
    log "the rootfs is not from $TARBALL (other suite or packages): replacing it"
    rm -rf "$ROOTFS"
  fi
  rm -rf "$ROOTFS.tmp"; mkdir -p "$ROOTFS.tmp"
  if [ -f "$TARBALL" ]; then
    log "extracting $TARBALL"
    tar -C "$ROOTFS.tmp" --zstd -xpf "$TARBALL" --numeric-owner
  else
    local mirror=${BOX_MIRROR:-$(host_mirror)}
    [ -n "$mirror" ] || die "no Debian mirror in the host's apt sources: set BOX_MIRROR"
    log "debootstrap $BOX_SUITE from $mirror (about a minute; log: $STATE/debootstrap.log)"
    debootstrap --variant=minbase --include="$PKGS" "$BOX_SUITE" "$ROOTFS.tmp" "$mirror" \
      </dev/null >"$STATE/debootstrap.log" 2>&1 || { tail -20 "$STATE/debootstrap.log" >&2; die "debootstrap failed"; }
    customize "$ROOTFS.tmp"
    # a private temp name: another box (other BOX_NAME, other lock) may be caching the same tarball
    tar -C "$ROOTFS.tmp" --zstd -cpf "$TARBALL.$$.tmp" --numeric-owner . && mv "$TARBALL.$$.tmp" "$TARBALL"
    log "cached $TARBALL"
  fi
  mv "$ROOTFS.tmp" "$ROOTFS"
  echo "$TARBALL" >"$STATE/rootfs.from"
}

customize() {
  local r=$1 u
  # nothing periodic or interactive in a test box
  for u in console-getty.service getty@.service apt-daily.timer apt-daily-upgrade.timer \
           dpkg-db-backup.timer e2scrub_all.timer fstrim.timer systemd-tmpfiles-clean.timer; do
    ln -sf /dev/null "$r/etc/systemd/system/$u"
  done
  mkdir -p "$r/etc/systemd/journald.conf.d" "$r/etc/systemd/system.conf.d"
  # tests read service output from the journal: keep it in memory, never rate-limit it
  printf '[Journal]\nStorage=volatile\nRateLimitIntervalSec=0\nRateLimitBurst=0\n' \
    >"$r/etc/systemd/journald.conf.d/50-box.conf"
  # a watchdog SIGABRT must not drop core files into the rootfs
  printf '[Manager]\nDefaultLimitCORE=0\n' >"$r/etc/systemd/system.conf.d/50-box.conf"
  chroot "$r" apt-get clean >/dev/null 2>&1 || true
  rm -rf "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/*.bin
  : >"$r/etc/machine-id"
}

# pid of our systemd-nspawn, if running (checked against pid reuse)
nspawn_pid() {
  local p; p=$(cat "$PIDFILE" 2>/dev/null || true)
  [ -n "$p" ] && tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q -- "systemd-nspawn .*-D $ROOTFS " && echo "$p"
  return 0
}

# host pid of the box's PID 1: the child of nspawn that is not nspawn itself
leader_pid() {
  local np c; np=$(nspawn_pid); [ -n "$np" ] || return 0
  for c in $(cat /proc/"$np"/task/*/children 2>/dev/null); do
    [ "$(readlink /proc/"$c"/exe)" != "$(readlink /proc/"$np"/exe)" ] && { echo "$c"; return 0; }
  done
  return 0
}

box_exec() {
  local l; l=$(leader_pid); [ -n "$l" ] || die "box is not up"
  nsenter --target "$l" --all --root --wd /usr/bin/env -i PATH="$PATH_IN" HOME=/root LANG=C.UTF-8 \
    TERM=dumb SYSTEMD_PAGER= SYSTEMD_COLORS=0 PYTHONDONTWRITEBYTECODE=1 "$@"
}

cg_pids() {
  local d; for d in $CGDIRS; do [ -d "$d" ] && find "$d" -name cgroup.procs -exec cat {} +; done 2>/dev/null | sort -un
}

# kill what is left in OUR cgroups (by pid), remove them and nspawn's runtime leftovers
cleanup() {
  local p d
  for p in $(cg_pids); do
    [ "$p" = $$ ] && continue
    log "killing leftover pid $p: $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | cut -c1-80)"
    kill -KILL "$p" 2>/dev/null || true
  done
  for _ in $(seq 50); do [ -z "$(cg_pids)" ] && break; sleep 0.1; done
  for d in $CGDIRS; do
    [ -d "$d" ] && { find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || log "warning: cgroup $d remains"; }
  done
  rm -f "$PIDFILE"
  rm -rf "/run/systemd/nspawn/propagate/$BOX_NAME" "/run/systemd/nspawn/unix-export/$BOX_NAME"
}

wait_ready() {
  local deadline=$((SECONDS + BOX_BOOT_TIMEOUT)) st=
  while [ $SECONDS -lt $deadline ]; do
    [ -n "$(nspawn_pid)" ] || { tail -30 "$CONSOLE" >&2; die "the box died while booting"; }
    if [ -n "$(leader_pid)" ]; then
      st=$(box_exec systemctl is-system-running 2>/dev/null || true)
      case $st in
        running) return 0 ;;
        degraded) log "warning: degraded:"; box_exec systemctl --failed --no-legend >&2 || true; return 0 ;;
      esac
    fi
    sleep 0.1
  done
  tail -30 "$CONSOLE" >&2; die "not ready after ${BOX_BOOT_TIMEOUT}s (state: ${st:-unknown})"
}

cmd_up() {
  if [ -n "$(nspawn_pid)" ]; then wait_ready; log "already up"; return 0; fi
  local t0=$SECONDS d
  make_rootfs
  echo "$BOX_NAME" >"$ROOTFS/etc/hostname"
  mkdir -p "$BOX_SHARE"
  cleanup
  for d in $CGDIRS; do mkdir -p "$d"; done
  # setsid + every fd above 2 closed: nothing of the caller's (a pytest pipe, our lock) is held by
  # the box. The shell moves itself into our cgroup(s), then becomes systemd-nspawn.
  # SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1: pure cgroup v2 in the box (v1 never reports empty cgroups).
  setsid env -i PATH="$PATH_IN" SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 SYSTEMD_LOG_COLOR=0 \
    CGDIRS="$CGDIRS" PIDFILE="$PIDFILE" /bin/bash -c '
      for fd in $(ls /proc/$$/fd); do [ "$fd" -gt 2 ] && eval "exec $fd>&-"; done
      for d in $CGDIRS; do echo $$ >"$d/cgroup.procs"; done
      echo $$ >"$PIDFILE"
      exec systemd-nspawn "$@"' nspawn \
    -b -D "$ROOTFS" -M "$BOX_NAME" --register=no --keep-unit --private-network \
    --console=read-only --link-journal=no --resolv-conf=off --timezone=off \
    --bind="$BOX_SHARE:/share" </dev/null >"$CONSOLE" 2>&1 9>&- &
  disown || true
  for d in $(seq 100); do [ -n "$(leader_pid)" ] && break; sleep 0.05; done
  [ -n "$(nspawn_pid)" ] || { cat "$CONSOLE" >&2; die "systemd-nspawn did not start"; }
  wait_ready
  log "up in $((SECONDS - t0)) s (nspawn pid $(nspawn_pid))"
}

cmd_down() {
  local np; np=$(nspawn_pid)
  if [ -n "$np" ]; then
    # SIGTERM to nspawn = orderly poweroff of the box
    kill -TERM "$np" 2>/dev/null || true
    for _ in $(seq 300); do [ -d "/proc/$np" ] || break; sleep 0.1; done
    [ -d "/proc/$np" ] && { log "warning: no clean poweroff in 30 s, killing nspawn"; kill -KILL "$np" || true; }
  fi
  cleanup
  if grep -q " $ROOTFS" /proc/self/mountinfo; then
    grep " $ROOTFS" /proc/self/mountinfo >&2; die "host mounts under $ROOTFS remain"
  fi
  [ -z "$(cg_pids)" ] || die "pids remain in our cgroup: $(cg_pids | tr '\n' ' ')"
  log "down"
}

[ "$(id -u)" = 0 ] || die "must run as root"
mkdir -p "$BOX_DIR"
cmd=${1:-}; shift || true
case $cmd in up|down|reset|rootfs) exec 9>"$BOX_DIR/.$BOX_NAME.lock"; flock -w 300 9 || die "lock busy";; esac
case $cmd in
  up) cmd_up ;;
  down) cmd_down ;;
  reset) cmd_down; rm -rf "$ROOTFS" "$ROOTFS.tmp" ;;
  rootfs) make_rootfs ;;
  exec) [ $# -ge 1 ] || die "usage: exec CMD [ARG...]"; box_exec "$@" ;;
  sh) [ $# -eq 1 ] || die "usage: sh 'SCRIPT'"; box_exec /bin/sh -c "$1" ;;
  status) np=$(nspawn_pid); [ -n "$np" ] || { echo down; exit 1; }
          echo "up: nspawn pid $np, leader $(leader_pid), $(box_exec systemctl is-system-running || true)" ;;
  logs) cat "$CONSOLE" ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; [ -z "$cmd" ] || [ "$cmd" = help ] || exit 2 ;;
esac
