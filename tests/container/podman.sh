#!/usr/bin/env bash
# podman.sh - what tests/container needs on the host: Debian's podman (with runc), and a local
# base image to build examples/container/Dockerfile on, since no container registry is reachable.
#
#   podman.sh tools   install podman, runc and debootstrap with apt-get if missing
#   podman.sh base    make sure the base image $BASE_IMAGE exists (prints its name): from podman's
#                     storage, else from the cached tarball, else debootstrap + cache the tarball
#   podman.sh purge   remove the base image and the cached tarball
#
# The base is a Debian minbase with Debian's python3, pip, setuptools and svcengine's three
# dependencies (python3-daemon, python3-sdnotify, python3-setproctitle), so the Dockerfile's
# `pip install .` runs offline: the image's environment sets PIP_NO_INDEX, no build isolation and
# PIP_BREAK_SYSTEM_PACKAGES (Debian's python is "externally managed").
#
# Settings (environment, all optional):
#   CTR_DIR      tarball cache (default /var/lib/svcengine-podman)
#   CTR_SUITE    Debian suite (default bookworm)
#   CTR_MIRROR   Debian mirror (default: the first non-security source of the host's apt configuration)
#
# Must run as root. Non-interactive.
set -euo pipefail

CTR_DIR=${CTR_DIR:-/var/lib/svcengine-podman}
CTR_SUITE=${CTR_SUITE:-bookworm}
PKGS=python3,python3-pip,python3-setuptools,python3-daemon,python3-sdnotify,python3-setproctitle
# the name encodes what is in it, so a change of suite or packages makes a new one
HASH=$(printf '%s' "$CTR_SUITE $PKGS" | sha256sum | cut -c1-10)
TARBALL=$CTR_DIR/base-$CTR_SUITE-$HASH.tar.zst
BASE_IMAGE=localhost/svcengine-base:$CTR_SUITE-$HASH

log() { echo "podman.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# The host's Debian mirror, from its apt sources (deb822 or one-line format); never hard-coded.
host_mirror() {
  local all
  all=$({ awk '/^URIs:/ {for (i = 2; i <= NF; i++) print $i}' /etc/apt/sources.list.d/*.sources
          awk '$1 == "deb" {i = 2; if ($2 ~ /^\[/) while (i <= NF && $i !~ /\]$/) i++; if ($2 ~ /^\[/) i++; print $i}' \
            /etc/apt/sources.list /etc/apt/sources.list.d/*.list
        } 2>/dev/null | grep -v -- -security || true)
  { grep -m1 -E '/debian/?$' <<<"$all" || head -n1 <<<"$all"; } | grep . || true
}

cmd_tools() {
  local missing=()
  command -v podman >/dev/null || missing+=(podman)
  command -v runc >/dev/null || missing+=(runc)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v zstd >/dev/null || missing+=(zstd)
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
  log "installing host packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # --no-install-recommends: no crun (fails on a host with mixed cgroup v1/v2), no slirp, no fuse
  apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null 2>&1 ||
    { apt-get update -qq </dev/null >/dev/null &&
      apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null; }
}

import_tarball() {
  zstd -dc "$TARBALL" | podman import \
    --change 'ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV=LANG=C.UTF-8' \
    --change 'ENV=PIP_NO_INDEX=1' \
    --change 'ENV=PIP_NO_BUILD_ISOLATION=0' \
    --change 'ENV=PIP_BREAK_SYSTEM_PACKAGES=1' \
    --change 'ENV=PIP_ROOT_USER_ACTION=ignore' \
    --change 'CMD=["/usr/bin/python3"]' \
    - "$BASE_IMAGE" >/dev/null
}

cmd_base() {
  cmd_tools
  if podman image exists "$BASE_IMAGE"; then echo "$BASE_IMAGE"; return 0; fi
  mkdir -p "$CTR_DIR"
  exec 9>"$CTR_DIR/.lock"; flock -w 600 9 || die "lock busy"
  if podman image exists "$BASE_IMAGE"; then echo "$BASE_IMAGE"; return 0; fi
  if [ ! -f "$TARBALL" ]; then
    local mirror=${CTR_MIRROR:-$(host_mirror)} root=$CTR_DIR/rootfs.$$ t0=$SECONDS
    [ -n "$mirror" ] || die "no Debian mirror in the host's apt sources: set CTR_MIRROR"
    log "debootstrap $CTR_SUITE minbase from $mirror (about a minute; log: $CTR_DIR/debootstrap.log)"
    rm -rf "$root"
    debootstrap --variant=minbase --include="$PKGS" "$CTR_SUITE" "$root" "$mirror" \
      </dev/null >"$CTR_DIR/debootstrap.log" 2>&1 ||
      { tail -20 "$CTR_DIR/debootstrap.log" >&2; rm -rf "$root"; die "debootstrap failed"; }
    # a smaller image: no apt lists, no package cache, no docs
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
      "$root"/usr/share/doc/* "$root"/usr/share/man/*
    tar -C "$root" --zstd -cpf "$TARBALL.$$.tmp" --numeric-owner . && mv "$TARBALL.$$.tmp" "$TARBALL"
    rm -rf "$root"
    log "debootstrap done in $((SECONDS - t0)) s; cached $TARBALL"
  fi
  import_tarball
  echo "$BASE_IMAGE"
}

[ "$(id -u)" = 0 ] || die "must run as root"
cmd=${1:-}; shift || true
case $cmd in
  tools) cmd_tools ;;
  base) cmd_base ;;
  purge) podman rmi -f "$BASE_IMAGE" >/dev/null 2>&1 || true; rm -f "$TARBALL" ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; [ -z "$cmd" ] || [ "$cmd" = help ] || exit 2 ;;
esac
