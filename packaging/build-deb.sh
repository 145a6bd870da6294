#!/usr/bin/env bash
# build-deb.sh - build the Debian package dist/svcengine_<version>_all.deb and check it with lintian.
#
#   packaging/build-deb.sh              build what is committed (HEAD): what a clean clone builds
#   packaging/build-deb.sh --worktree   build the working tree as it is: tracked files with their
#                                       uncommitted edits, plus untracked files git does not ignore
#
# On Debian 12 (bookworm) or later. The build runs in a temporary copy of the tree (the checkout is
# never written to, except dist/, which git ignores). Missing build dependencies (Build-Depends of
# packaging/debian/control, dpkg-dev, lintian) are installed with apt-get when run as root.
#
# The version comes from one place, the project's: svcengine.__version__, which pyproject.toml
# reads as a dynamic version (checked here). debian/changelog is generated from it; a PEP 440
# pre-release becomes a Debian ~ version (0.2.0rc1 -> 0.2.0~rc1), so that it sorts first.
#
# Settings (environment, all optional):
#   DIST               output directory (default: dist/ in the checkout)
#   DEB_BUILD_OPTIONS  passed to dpkg-buildpackage, e.g. nocheck (skips the unit tests)
#   BUILD_DEB_KEEP=1   keep the temporary build tree and say where it is
#
# Output in $DIST: svcengine_<version>_all.deb, its .buildinfo and .changes, build.log, lintian.txt.
# Fails if lintian reports any error or warning that is not overridden.
set -euo pipefail

# Debian's own tools and Python only: not a virtualenv's, pyenv's or /usr/local's python3
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
unset PYTHONPATH PYTHONHOME VIRTUAL_ENV PYTHONSTARTUP PYTHONUSERBASE

log() { echo "build-deb: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

mode=head
case ${1:-} in
  "") ;;
  --worktree) mode=worktree ;;
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) die "unknown argument '$1' (see --help)" ;;
esac

command -v git >/dev/null || die "git is needed (the build starts from the git checkout)"
REPO=$(git -C "$(dirname "$0")" rev-parse --show-toplevel) || die "not inside a git checkout"
cd "$REPO"
DIST=${DIST:-$REPO/dist}
t0=$SECONDS

work=$(mktemp -d "${TMPDIR:-/tmp}/svcengine-deb.XXXXXX")
if [ "${BUILD_DEB_KEEP:-}" = 1 ]; then
  trap 'log "build tree kept: $work"' EXIT
else
  trap 'rm -rf "$work"' EXIT
fi
src=$work/svcengine

# --- 1. a copy of the source tree, with packaging/debian as debian/ ---------------------------------
mkdir -p "$src"
commit=$(git rev-parse --short=12 HEAD)
if [ $mode = head ]; then
  git archive --format=tar HEAD | tar -C "$src" -xf -
  origin="git commit $commit"
else
  git ls-files -z --cached --others --exclude-standard --deduplicate |
    while IFS= read -r -d '' f; do
      if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi # skip deleted files
    done |
    tar --null -T - -cf - | tar -C "$src" -xf -
  origin="the working tree at git commit $commit"
  if [ -n "$(git status --porcelain --untracked-files=normal)" ]; then origin="$origin, with changes"; fi
fi
[ -f "$src/packaging/debian/control" ] ||
  die "no packaging/debian in the $mode tree (uncommitted? try --worktree)"
cp -a "$src/packaging/debian" "$src/debian"

# --- 2. build dependencies ---------------------------------------------------------------------------
deps_ok() {
  command -v dpkg-buildpackage >/dev/null && command -v lintian >/dev/null &&
    command -v python3 >/dev/null && (cd "$src" && dpkg-checkbuilddeps) >/dev/null 2>&1
}
apt_get() {
  DEBIAN_FRONTEND=noninteractive apt-get -y -q --no-install-recommends "$@" </dev/null
}
if ! deps_ok; then
  if [ "$(id -u)" != 0 ]; then
    (cd "$src" && dpkg-checkbuilddeps) || true
    die "missing build dependencies; as root: apt-get install dpkg-dev lintian python3 &&" \
      "apt-get build-dep $REPO/packaging (or run this script as root)"
  fi
  log "installing build dependencies with apt-get (log: $DIST/apt.log)"
  mkdir -p "$DIST"
  {
    # a fresh machine may have no package lists yet: update only when an install fails
    apt_get install dpkg-dev lintian python3 ||
      { apt-get update -q </dev/null && apt_get install dpkg-dev lintian python3; }
    apt_get build-dep "$src" || { apt-get update -q </dev/null && apt_get build-dep "$src"; }
  } >"$DIST/apt.log" 2>&1 || { tail -30 "$DIST/apt.log" >&2; die "apt-get failed"; }
  deps_ok || { (cd "$src" && dpkg-checkbuilddeps) || true; die "build dependencies still missing"; }
fi

# --- 3. the version: svcengine.__version__, the one place (pyproject.toml reads it too) ----------
versions=$(
  cd "$src" && python3 - <<'EOF'
import ast, re, sys, tomllib

with open("pyproject.toml", "rb") as f:
    pyproject = tomllib.load(f)
dynamic = pyproject.get("tool", {}).get("setuptools", {}).get("dynamic", {}).get("version", {})
if "version" in pyproject["project"] or dynamic.get("attr") != "svcengine.__version__":
    sys.exit("pyproject.toml must take its version from svcengine.__version__ (dynamic)")
with open("svcengine/__init__.py") as f:
    tree = ast.parse(f.read())
init = [
    n.value.value
    for n in tree.body
    if isinstance(n, ast.Assign)
    and any(isinstance(t, ast.Name) and t.id == "__version__" for t in n.targets)
    and isinstance(n.value, ast.Constant)
]
if len(init) != 1:
    sys.exit("svcengine/__init__.py: no plain __version__ = '...' assignment")
py = init[0]
# PEP 440 (normalized) -> Debian native version. dpkg sorts "~" before anything, even the end:
# 1.0~~dev1 < 1.0~a1 < 1.0~rc1 < 1.0 < 1.0.post1, as PEP 440 orders them.
m = re.fullmatch(
    r"(\d+(?:\.\d+)*)(?:(a|b|rc)(\d+))?(?:\.post(\d+))?(?:\.dev(\d+))?(?:\+([a-z0-9.]+))?", py
)
if not m:
    sys.exit(f"pyproject.toml: version {py!r} is not a normalized PEP 440 version")
release, pre, pre_n, post, dev, local = m.groups()
deb = release
if pre:
    deb += f"~{pre}{pre_n}"
if post:
    deb += f".post{post}"
if dev:
    deb += f"~~dev{dev}"
if local:
    deb += f"+{local}"
print(py, deb)
EOF
) || die "cannot take the version from svcengine/__init__.py (see above)"
read -r pyversion version <<<"$versions"
log "version $pyversion (Debian: $version), from $origin"

# --- 4. debian/changelog, generated ----------------------------------------------------------------
maintainer=$(sed -n 's/^Maintainer: *//p' "$src/debian/control")
[ -n "$maintainer" ] || die "no Maintainer in packaging/debian/control"
# the commit's time: the same tree always gives the same changelog (and SOURCE_DATE_EPOCH)
epoch=$(git log -1 --format=%ct HEAD)
cat >"$src/debian/changelog" <<EOF
svcengine ($version) unstable; urgency=medium

  * svcengine $pyversion.
    Built from $origin.
    This entry is generated by packaging/build-deb.sh from the version in
    pyproject.toml; the project's history is its git log.

 -- $maintainer  $(LC_ALL=C date -u -R -d "@$epoch")
EOF

# --- 5. build --------------------------------------------------------------------------------------
mkdir -p "$DIST"
deb=svcengine_${version}_all.deb
changes=svcengine_${version}_$(dpkg --print-architecture).changes
buildinfo=${changes%.changes}.buildinfo
rm -f "$DIST/$deb" "$DIST/$changes" "$DIST/$buildinfo" "$DIST/lintian.txt"
log "dpkg-buildpackage (log: $DIST/build.log)"
# a clean environment: the build sees only what debhelper and dpkg-buildpackage set
(cd "$src" && env -i PATH="$PATH" HOME="$work" LC_ALL=C.UTF-8 TMPDIR="$work" \
  ${DEB_BUILD_OPTIONS:+DEB_BUILD_OPTIONS="$DEB_BUILD_OPTIONS"} dpkg-buildpackage -us -uc -b) \
  >"$DIST/build.log" 2>&1 ||
  { tail -40 "$DIST/build.log" >&2; die "dpkg-buildpackage failed (log: $DIST/build.log)"; }
[ -f "$work/$deb" ] || die "dpkg-buildpackage made no $deb: $(ls "$work")"

# The package's version, and the Python distribution's inside it, are the project's version.
[ "$(dpkg-deb -f "$work/$deb" Version)" = "$version" ] || die "$deb: wrong Version"
contents=$(dpkg-deb -c "$work/$deb")
grep -q "/usr/lib/python3/dist-packages/svcengine-$pyversion\.dist-info/" <<<"$contents" ||
  die "$deb: no svcengine-$pyversion.dist-info inside"

# --- 6. lintian ------------------------------------------------------------------------------------
# Every tag is shown (info and pedantic too, overridden ones as O:); only errors and warnings fail.
log "lintian"
# Lintian advises against running as root: as root, run it as nobody.
as_user=()
if [ "$(id -u)" = 0 ]; then
  chmod 755 "$work" && chmod 644 "$work/$deb"
  as_user=(setpriv --reuid=nobody --regid=nogroup --clear-groups env HOME=/tmp TMPDIR=/tmp)
fi
set +e
# from $work: lintian cd's back to where it started, and nobody may not enter the checkout
# (a clone in /root: "Can't cd to ...: Permission denied", exit 13)
(cd "$work" && "${as_user[@]}" lintian --fail-on error,warning --display-info --pedantic \
  --show-overrides --color never "$work/$deb") >"$work/lintian.txt" 2>&1
lint=$?
set -e
cp "$work/lintian.txt" "$DIST/lintian.txt"
if [ -s "$DIST/lintian.txt" ]; then sed 's/^/  /' "$DIST/lintian.txt" >&2; fi
[ $lint = 0 ] || die "lintian: errors or warnings (exit $lint); see $DIST/lintian.txt"

cp "$work/$deb" "$work/$changes" "$work/$buildinfo" "$DIST/"
log "built $DIST/$deb in $((SECONDS - t0)) s; lintian: no errors, no warnings"
echo "$DIST/$deb"
