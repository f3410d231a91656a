#!/usr/bin/env bash
# Runs the Go tests that need kernel modules this host may lack (ipvlan, 8021q,
# dummy, bridge VLAN filtering, ...) inside a qemu VM booting Debian's stock
# kernel. The VM has no network device; the tests only use namespaces they
# create inside it. See scripts/test-vm.md.
#
#   scripts/test-vm.sh [run]   set up (cached), build, boot, report (default)
#   scripts/test-vm.sh setup   only install the host tools and prepare the kernel
#   scripts/test-vm.sh clean   remove the cache directory
#   scripts/test-vm.sh report RESULTS PKG...   summarize a results file again
#                              (e.g. $TEST_VM_CACHE/last/results.raw)
#
# Settings (environment):
#   VM_PKGS               packages to test (default: the module-dependent ones that have tests)
#   TEST_VM_RUN           -test.run regexp passed to every test binary
#   TEST_VM_REQUIRE       tests that must PASS (not skip): "pkg:TestName" or "TestName" (any package)
#   TEST_VM_FAIL_SKIP_RE  a skip whose reason matches this ERE (case-insensitive) fails the run
#   TEST_VM_TIMEOUT       seconds before the VM is killed (default 900)
#   TEST_VM_TEST_TIMEOUT  -test.timeout of each binary (default 10m)
#   TEST_VM_CACHE         cache directory (default /var/cache/linen-test-vm as root)
#   TEST_VM_KERNEL_PKG    Debian kernel package (default: what linux-image-amd64 depends on)
#   TEST_VM_ACCEL         auto | tcg | kvm (default auto: kvm only with vmx/svm and /dev/kvm)
#   TEST_VM_MEM, TEST_VM_SMP   guest memory in MiB (default 2048) and CPUs (default 2)
#   TEST_VM_HOST_BINS     host programs copied in with their libraries (default: ip tc nft iperf3)
#   TEST_VM_HOST_DIRS     host directories copied in, programs with their libraries
#                         (default: /usr/lib/cni, the reference plugins the tests look up)
#   TEST_VM_KEEP=1        keep the work directory (binaries, initrd) for inspection
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GO=${GO:-go}

# Packages whose namespace tests need modules; the ones without tests yet are
# left out by default.
DEFAULT_PKGS="internal/plugins/main/bridge internal/nl internal/plugins/main/sublink
internal/plugins/main/macvlan internal/plugins/main/ipvlan internal/plugins/main/vlan
internal/plugins/main/hostdevice internal/plugins/meta/tuning"
# Tests that must have run and passed (applied to the packages being tested,
# unless TEST_VM_RUN narrows the run).
DEFAULT_REQUIRE="internal/plugins/main/bridge:TestVlanFiltering internal/plugins/main/bridge:TestVlanGateway"
# A skip for one of these reasons means the VM lacks what it exists to provide.
DEFAULT_FAIL_SKIP_RE='module|not supported|eopnotsupp|config_[a-z0-9_]+'

# Modules loaded at boot; everything else in the module set loads on demand
# (the kernel calls /sbin/modprobe, which is busybox).
BOOT_MODULES="veth bridge 8021q macvlan ipvlan dummy ifb vxlan nf_tables xfrm_user"
# The module set: these directories of the kernel tree (plus dependencies).
MODULE_DIRS="net/netfilter net/ipv4 net/ipv6 net/bridge net/8021q net/sched net/802 net/llc net/xfrm net/key
drivers/net/ipvlan drivers/net/vxlan drivers/net/wireguard drivers/net/bonding drivers/net/team"
# ... and the top-level modules of drivers/net (virtual devices: veth, macvlan, dummy, ifb, ...).
MODULE_TOPDIRS="drivers/net"
HOST_PKGS="qemu-system-x86 busybox-static cpio kmod xz-utils"

TIMEOUT=${TEST_VM_TIMEOUT:-900}
TEST_TIMEOUT=${TEST_VM_TEST_TIMEOUT:-10m}
MEM=${TEST_VM_MEM:-2048}
SMP=${TEST_VM_SMP:-2}
ACCEL=${TEST_VM_ACCEL:-auto}
HOST_BINS=${TEST_VM_HOST_BINS-ip tc nft iperf3}
HOST_DIRS=${TEST_VM_HOST_DIRS-/usr/lib/cni}
RUN_RE=${TEST_VM_RUN:-}
FAIL_SKIP_RE=${TEST_VM_FAIL_SKIP_RE-$DEFAULT_FAIL_SKIP_RE}
if [ -n "${TEST_VM_CACHE:-}" ]; then
	CACHE=$TEST_VM_CACHE
elif [ "$(id -u)" = 0 ]; then
	CACHE=/var/cache/linen-test-vm
else
	CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/linen-test-vm
fi

log() { printf 'test-vm: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 2
}
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'; }

# ---------------------------------------------------------------- host tools

ensure_host_tools() {
	local missing="" p
	for p in $HOST_PKGS; do
		dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
	done
	[ -z "$missing" ] && return 0
	[ "$(id -u)" = 0 ] || die "missing Debian packages:$missing (run as root to install them)"
	log "installing:$missing"
	# shellcheck disable=SC2086
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null; then
		apt-get update -qq
		# shellcheck disable=SC2086
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
	fi
}

# ------------------------------------------------------------------- kernel

# The versioned kernel package behind the linux-image-amd64 metapackage.
resolve_kernel_pkg() {
	if [ -n "${TEST_VM_KERNEL_PKG:-}" ]; then
		echo "$TEST_VM_KERNEL_PKG"
		return
	fi
	local p
	p=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
	if [ -z "$p" ] && [ "$(id -u)" = 0 ]; then
		apt-get update -qq >&2
		p=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
	fi
	if [ -z "$p" ]; then # offline: use what the cache holds
		p=$(find "$CACHE/kernel" -mindepth 2 -maxdepth 2 -name ready -printf '%h\n' 2>/dev/null | head -1 | xargs -r basename)
	fi
	[ -n "$p" ] || die "cannot resolve the kernel package (set TEST_VM_KERNEL_PKG, e.g. linux-image-6.1.0-56-amd64)"
	echo "$p"
}

# Fingerprint of what prepare_kernel derives from the .deb.
module_spec() { printf '%s|%s|v2\n' "$MODULE_DIRS" "$MODULE_TOPDIRS" | md5sum | cut -c1-12; }

# Makes $CACHE/kernel/<pkg>/ hold: the .deb, an uncompressed vmlinux (PVH
# boot; bzImage as a fallback), and the module set with its dependencies.
# The package is extracted into the cache, never installed on the host.
prepare_kernel() {
	local pkg=$1 kdir="$CACHE/kernel/$1" spec
	spec=$(module_spec)
	if [ -f "$kdir/ready" ] && [ "$(cat "$kdir/ready")" = "$spec" ]; then
		return 0
	fi
	local t0 tmp deb kver kroot mroot list n
	t0=$(now)
	mkdir -p "$kdir"
	deb=$(find "$kdir" -maxdepth 1 -name "${pkg}_*.deb" | head -1)
	if [ -z "$deb" ]; then
		log "downloading $pkg"
		local sandbox=()
		[ "$(id -u)" = 0 ] && sandbox=(-o APT::Sandbox::User=root)
		(cd "$kdir" && apt-get download -qq "${sandbox[@]}" "$pkg") || die "apt-get download $pkg failed"
		deb=$(find "$kdir" -maxdepth 1 -name "${pkg}_*.deb" | head -1)
		[ -n "$deb" ] || die "apt-get download left no ${pkg}_*.deb"
	fi
	tmp=$(mktemp -d "$CACHE/kernel/.extract.XXXXXX")
	EXTRACT_TMP=$tmp
	log "extracting $(basename "$deb")"
	kroot=$tmp/root
	dpkg-deb -x "$deb" "$kroot"
	kver=$(ls "$kroot/lib/modules")
	[ "$(echo "$kver" | wc -w)" = 1 ] || die "expected one kernel version in $deb, found: $kver"

	# vmlinuz is a bzImage with an xz (or zstd/gzip) stream inside; the ELF
	# vmlinux behind it boots through PVH, seconds faster under TCG.
	local vmlinuz="$kroot/boot/vmlinuz-$kver" off kind
	rm -f "$kdir/vmlinux" "$kdir/bzImage"
	for kind in xz zstd gzip; do
		case $kind in
		xz) off=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$vmlinuz" | head -1 | cut -d: -f1) ;;
		zstd) off=$(LC_ALL=C grep -obUaP '\x28\xb5\x2f\xfd' "$vmlinuz" | head -1 | cut -d: -f1) ;;
		gzip) off=$(LC_ALL=C grep -obUaP '\x1f\x8b\x08' "$vmlinuz" | head -1 | cut -d: -f1) ;;
		esac
		[ -n "$off" ] || continue
		# The decompressor complains about the bzImage's trailing data; the
		# ELF check below decides.
		case $kind in
		xz) tail -c +$((off + 1)) "$vmlinuz" | xz -dc >"$tmp/vmlinux" 2>/dev/null || true ;;
		zstd) command -v zstd >/dev/null && { tail -c +$((off + 1)) "$vmlinuz" | zstd -dcq >"$tmp/vmlinux" 2>/dev/null || true; } ;;
		gzip) tail -c +$((off + 1)) "$vmlinuz" | gzip -dc >"$tmp/vmlinux" 2>/dev/null || true ;;
		esac
		if [ -s "$tmp/vmlinux" ] && [ "$(head -c4 "$tmp/vmlinux" | od -An -c | tr -d ' ')" = '177ELF' ]; then
			break
		fi
		rm -f "$tmp/vmlinux"
	done
	if [ -f "$tmp/vmlinux" ]; then
		mv "$tmp/vmlinux" "$kdir/vmlinux"
	else
		log "could not extract vmlinux; booting the bzImage (slower)"
		cp "$vmlinuz" "$kdir/bzImage"
	fi

	# The module set and its dependency closure, copied out of the tree.
	depmod -b "$kroot" "$kver"
	local kmod="$kroot/lib/modules/$kver"
	list=$tmp/modules.list
	{
		# shellcheck disable=SC2086
		(cd "$kmod/kernel" || exit 1; find $MODULE_DIRS -name '*.ko*' 2>/dev/null || true)
		# shellcheck disable=SC2086
		(cd "$kmod/kernel" || exit 1; find $MODULE_TOPDIRS -maxdepth 1 -name '*.ko*' 2>/dev/null || true)
	} | sed 's#.*/##; s/\.ko.*$//' | sort -u >"$tmp/names"
	# shellcheck disable=SC2046,SC2086
	modprobe -d "$kroot" -S "$kver" -a --show-depends $(cat "$tmp/names") $BOOT_MODULES |
		awk '$1=="insmod"{print $2}' | sort -u >"$list"
	mroot=$tmp/modules
	n=0
	while read -r path; do
		local rel=${path#"$kroot"/}
		mkdir -p "$mroot/$(dirname "$rel")"
		case $path in
		*.ko.xz) xz -dc "$path" >"$mroot/${rel%.xz}" ;;
		*.ko.zst) zstd -dcq "$path" >"$mroot/${rel%.zst}" ;;
		*.ko.gz) gzip -dc "$path" >"$mroot/${rel%.gz}" ;;
		*) cp "$path" "$mroot/$rel" ;;
		esac
		n=$((n + 1))
	done <"$list"
	cp "$kmod"/modules.order "$kmod"/modules.builtin* "$mroot/lib/modules/$kver/" 2>/dev/null || true
	rm -rf "$kdir/modules"
	mv "$mroot" "$kdir/modules"
	echo "$kver" >"$kdir/kver"
	echo "$spec" >"$kdir/ready"
	rm -rf "$tmp"
	EXTRACT_TMP=
	# Older kernels in the cache are no longer needed.
	find "$CACHE/kernel" -mindepth 1 -maxdepth 1 -type d ! -name "$pkg" ! -name '.extract.*' -exec rm -rf {} +
	log "kernel $kver ready: $n modules, $(du -sh "$kdir" | cut -f1) in $kdir ($(since "$t0") s)"
}

# ---------------------------------------------------------------- initramfs

# copy_with_libs ROOT FILE: FILE at the same path in ROOT with the shared
# libraries it needs (the initramfs mirrors the host's merged-/usr layout).
copy_with_libs() {
	local root=$1 f=$2 lib
	mkdir -p "$root$(dirname "$f")"
	cp -L "$f" "$root$f"
	for lib in $(ldd "$f" 2>/dev/null | awk '{for(i=1;i<=NF;i++) if ($i ~ /^\//) print $i}'); do
		[ -e "$root$lib" ] && continue
		mkdir -p "$root$(dirname "$lib")"
		cp -L "$lib" "$root$lib"
	done
}

# The guest's PID 1. It mounts what the tests expect, loads the boot modules,
# runs every test binary listed in /tests/list from its package's source
# directory, and copies each one's raw output, between markers, to the second
# serial port (a file on the host) as it runs. Console output is for people.
write_init() {
	cat >"$1" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s
export PATH=/hostbin:/sbin:/bin:/usr/sbin:/usr/bin HOME=/root TMPDIR=/tmp
up() { cut -d' ' -f1 /proc/uptime; }
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts && mount -t tmpfs tmpfs /dev/shm
# devtmpfs has none of the links udev would make (nft -f - opens /dev/stdin).
ln -sf /proc/self/fd /dev/fd; ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout; ln -sf /proc/self/fd/2 /dev/stderr
mount -t tmpfs tmpfs /run && mkdir -p /run/netns
mount -t tmpfs tmpfs /tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
mount --make-rshared / 2>/dev/null
# With ipip/gre loaded every new namespace would get tunl0, gre0, ... links.
sysctl -qw net.core.fb_tunnels_only_for_init_net=2
echo "TESTVM stage=init uptime=$(up) kernel=$(uname -r)"
for m in $(cat /etc/testvm-modules); do
	case $m in dummy) a=numdummies=0 ;; *) a= ;; esac
	modprobe "$m" $a || echo "TESTVM modprobe-failed $m"
done
ip link set lo up
for b in /hostbin/*; do
	[ -e "$b" ] && { "$b" -V >/dev/null 2>&1 || "$b" --version >/dev/null 2>&1 || echo "TESTVM host program $b does not run"; }
done
echo "TESTVM stage=modules uptime=$(up) loaded=$(wc -l </proc/modules)"

R=/dev/ttyS1
if [ -c $R ]; then stty -F $R raw -echo 2>/dev/null; else echo "TESTVM no $R: results are lost"; R=/dev/null; fi
. /tests/env
all=0
while read -r name pkg; do
	echo "TESTVM BEGIN pkg=$pkg uptime=$(up)"
	echo "TESTVM BEGIN pkg=$pkg" >$R
	set -- -test.v=test2json -test.count=1 -test.timeout="$TESTVM_TEST_TIMEOUT"
	[ -n "$TESTVM_RUN" ] && set -- "$@" -test.run "$TESTVM_RUN"
	rm -f /tmp/rc
	( cd "/src/$pkg" && "/tests/$name.test" "$@" </dev/null 2>&1; echo $? >/tmp/rc ) | tee /tmp/out $R | tr -d '\026' | grep -v '^=== NAME *$'
	rc=$(cat /tmp/rc 2>/dev/null || echo 125)
	[ -n "$(tail -c1 /tmp/out)" ] && echo >$R
	echo "TESTVM RESULT pkg=$pkg rc=$rc" >$R
	echo "TESTVM RESULT pkg=$pkg rc=$rc uptime=$(up)"
	[ "$rc" = 0 ] || all=1
	rm -f /tmp/out
done </tests/list
echo "TESTVM DONE rc=$all" >$R
echo "TESTVM DONE rc=$all uptime=$(up)"
sync
poweroff -f
EOF
	chmod 755 "$1"
}

# build_base DIR KDIR: the initramfs tree with busybox, the module set, the
# host programs the tests exec, and /init.
build_base() {
	local r=$1 kdir=$2 kver b p
	kver=$(cat "$kdir/kver")
	mkdir -p "$r"/{bin,sbin,usr/bin,usr/sbin,usr/lib,usr/lib64,etc,proc,sys,dev,run,tmp,root,hostbin,tests,src}
	ln -s usr/lib "$r/lib"
	ln -s usr/lib64 "$r/lib64"
	mkdir -p "$r/var" && ln -s ../run "$r/var/run"
	cp /bin/busybox "$r/bin/busybox"
	ldd /bin/busybox >/dev/null 2>&1 && die "/bin/busybox is not static (install busybox-static)"
	cp -a "$kdir/modules/lib/modules" "$r/usr/lib/"
	depmod -b "$r" "$kver"
	echo "$BOOT_MODULES" | tr ' ' '\n' >"$r/etc/testvm-modules"
	printf 'root:x:0:0:root:/root:/bin/sh\n' >"$r/etc/passwd"
	printf 'root:x:0:\n' >"$r/etc/group"
	printf '127.0.0.1 localhost\n::1 localhost\n' >"$r/etc/hosts"
	for b in $HOST_BINS; do
		p=$(command -v "$b" 2>/dev/null || true)
		if [ -z "$p" ]; then
			log "host program $b not found: tests that exec it will skip or fail in the VM"
			continue
		fi
		p=$(readlink -f "$p")
		copy_with_libs "$r" "$p"
		ln -sf "$p" "$r/hostbin/$b"
	done
	for p in /etc/iproute2 /usr/share/iproute2; do
		[ -d "$p" ] && { mkdir -p "$r$(dirname "$p")"; cp -a "$p" "$r$p"; }
	done
	for p in $HOST_DIRS; do
		if [ ! -d "$p" ]; then
			log "host directory $p not found: tests that use it will skip or fail in the VM"
			continue
		fi
		mkdir -p "$r$(dirname "$p")"
		cp -a "$p" "$r$p"
		find "$p" -type f -perm -u+x | while read -r b; do copy_with_libs "$r" "$b"; done
	done
	write_init "$r/init"
}

# ------------------------------------------------------------------ payload

# The packages to test: VM_PKGS, or the default list filtered to packages
# that exist and have tests.
select_pkgs() {
	local p out=""
	if [ -n "${VM_PKGS:-}" ]; then
		for p in $VM_PKGS; do
			p=${p#./}
			p=${p%/}
			compgen -G "$ROOT/$p/*_test.go" >/dev/null || die "VM_PKGS: $p has no tests"
			out="$out $p"
		done
	else
		for p in $DEFAULT_PKGS; do
			compgen -G "$ROOT/$p/*_test.go" >/dev/null && out="$out $p"
		done
	fi
	[ -n "$out" ] || die "no package to test"
	echo "$out"
}

# build_payload DIR PKGS...: static test binaries in /tests, each package's
# non-Go files (README.md, testdata/) in /src/<pkg> where its tests run.
build_payload() {
	local r=$1 p name f
	shift
	mkdir -p "$r/tests" "$r/src"
	: >"$r/tests/list"
	for p in "$@"; do
		name=$(echo "$p" | tr '/' '_')
		(cd "$ROOT" && CGO_ENABLED=0 "$GO" test -c -vet=off -trimpath -ldflags='-s -w' -o "$r/tests/$name.test" "./$p")
		mkdir -p "$r/src/$p"
		for f in "$ROOT/$p"/*; do
			[ -f "$f" ] && case $f in *.go) ;; *) cp "$f" "$r/src/$p/" ;; esac
		done
		[ -d "$ROOT/$p/testdata" ] && cp -a "$ROOT/$p/testdata" "$r/src/$p/"
		echo "$name $p" >>"$r/tests/list"
	done
	{
		printf 'TESTVM_RUN=%s\n' "'${RUN_RE//\'/\'\\\'\'}'"
		printf 'TESTVM_TEST_TIMEOUT=%s\n' "'$TEST_TIMEOUT'"
	} >"$r/tests/env"
}

mkcpio() { (cd "$1" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --owner=0:0 --quiet); }

# ------------------------------------------------------------------- report

# summarize RAW PKGS...: per package, the run/pass/fail/skip counts from the
# test binary's output (converted by test2json), the skipped tests with their
# reasons, the failed tests; then the required tests. Returns non-zero on any
# failure, missing result, forbidden skip or required test that did not pass.
summarize() {
	local raw=$1 dir=$2 p name rc bad=0 req pk tn st
	shift 2
	# Split the results file into one raw output per package.
	awk -v dir="$dir" '
		/^TESTVM BEGIN pkg=/ { sub(/^TESTVM BEGIN pkg=/, ""); f = $0; gsub("/", "_", f); out = dir "/" f ".raw"; printf "" > out; next }
		/^TESTVM RESULT pkg=/ { split($0, a, "rc="); print a[2] > (out ".rc"); close(out); out = ""; next }
		/^TESTVM DONE/ { next }
		out != "" { print > out }
	' <(tr -d '\r' <"$raw" 2>/dev/null)
	echo "== test-vm results"
	for p in "$@"; do
		name=$(echo "$p" | tr '/' '_')
		if [ ! -f "$dir/$name.raw" ]; then
			echo "FAIL $p: did not run (VM stopped before it)"
			bad=1
			continue
		fi
		rc=$(cat "$dir/$name.raw.rc" 2>/dev/null || echo "none: did not finish")
		"$GO" tool test2json -p "$p" <"$dir/$name.raw" >"$dir/$name.json" 2>/dev/null || true
		awk -v pkg="$p" -v rc="$rc" -v re="$FAIL_SKIP_RE" -v stf="$dir/$name.status" '
			function field(k,   i, s) {
				i = index($0, "\"" k "\":\"")
				if (i == 0) return ""
				s = substr($0, i + length(k) + 4)
				if (k == "Output") { sub(/"}$/, "", s) } else { sub(/".*/, "", s) }
				return s
			}
			function unesc(s) { gsub(/\\n/, "", s); gsub(/\\t/, " ", s); gsub(/\\"/, "\"", s); gsub(/\\\\/, "\\", s); return s }
			{
				a = field("Action"); t = field("Test")
				if (t == "") next
				if (a == "output") {
					o = unesc(field("Output"))
					if (o !~ /^ *(=== |--- )/ && o ~ /[^ ]/) { sub(/^ +/, "", o); last[t] = o }
				} else if (a == "pass" || a == "fail" || a == "skip") {
					n[a]++; order[++k] = t; status[t] = a
					print t "\t" a > stf
				}
			}
			END {
				bad = (rc != "0"); lines = ""
				for (i = 1; i <= k; i++) {
					t = order[i]
					if (status[t] == "skip") {
						forbidden = (re != "" && tolower(last[t]) ~ tolower(re))
						lines = lines sprintf("    %s %s: %s\n", (forbidden ? "SKIP (not allowed in the VM)" : "skip"), t, last[t])
						if (forbidden) bad = 1
					} else if (status[t] == "fail") {
						lines = lines sprintf("    fail %s\n", t)
					}
				}
				printf "%s %s: ran %d (pass %d, fail %d), skipped %d, exit %s\n%s", (bad ? "FAIL" : "ok  "), pkg, n["pass"] + n["fail"], n["pass"], n["fail"], n["skip"], rc, lines
				exit bad
			}' "$dir/$name.json" || bad=1
		touch "$dir/$name.status"
	done
	for req in $REQUIRE; do
		case $req in
		*:*) pk=${req%%:*} tn=${req#*:} ;;
		*) pk="" tn=$req ;;
		esac
		st=""
		for p in "$@"; do
			[ -n "$pk" ] && [ "$pk" != "$p" ] && continue
			name=$(echo "$p" | tr '/' '_')
			st=$(awk -F'\t' -v t="$tn" '$1==t{print $2}' "$dir/$name.status" 2>/dev/null | head -1)
			[ -n "$st" ] && break
		done
		if [ "$st" = pass ]; then
			echo "ok   required $req passed"
		else
			echo "FAIL required $req: ${st:-not run}"
			bad=1
		fi
	done
	return $bad
}

# ---------------------------------------------------------------------- run

cmd_setup() {
	mkdir -p "$CACHE/kernel"
	touch "$CACHE/.linen-test-vm"
	ensure_host_tools
	local pkg
	pkg=$(resolve_kernel_pkg)
	exec 9>"$CACHE/.lock"
	flock 9
	prepare_kernel "$pkg"
	flock -u 9
	KDIR="$CACHE/kernel/$pkg"
}

cmd_run() {
	local t0 t1 pkgs work kernel accel cpu rc qrc=0 sum=0 p
	t0=$(now)
	cmd_setup
	pkgs=$(select_pkgs)
	REQUIRE=${TEST_VM_REQUIRE-}
	if [ -z "${TEST_VM_REQUIRE+x}" ] && [ -z "$RUN_RE" ]; then
		for p in $DEFAULT_REQUIRE; do
			case " $pkgs " in *" ${p%%:*} "*) REQUIRE="$REQUIRE $p" ;; esac
		done
	fi
	log "setup $(since "$t0") s; packages:$pkgs"

	work=$(mktemp -d "$CACHE/work.XXXXXX")
	WORK=$work
	t1=$(now)
	build_base "$work/base" "$KDIR"
	# shellcheck disable=SC2086
	build_payload "$work/payload" $pkgs
	mkcpio "$work/base" >"$work/initrd.img"
	mkcpio "$work/payload" >>"$work/initrd.img"
	[ "${TEST_VM_KEEP:-}" = 1 ] || rm -rf "$work/base" "$work/payload"
	log "built and packed in $(since "$t1") s: initrd $(du -h "$work/initrd.img" | cut -f1)"

	if [ -f "$KDIR/vmlinux" ]; then kernel=$KDIR/vmlinux; else kernel=$KDIR/bzImage; fi
	accel=tcg,thread=multi cpu=qemu64
	case $ACCEL in
	kvm) accel=kvm cpu=host ;;
	auto) if grep -qE '\b(vmx|svm)\b' /proc/cpuinfo && [ -w /dev/kvm ]; then accel=kvm cpu=host; fi ;;
	tcg) ;;
	*) die "TEST_VM_ACCEL=$ACCEL: want auto, tcg or kvm" ;;
	esac
	log "booting ($accel, $SMP CPUs, $MEM MiB, timeout ${TIMEOUT}s)"
	t1=$(now)
	# -nodefaults: no network device, no disk; ttyS0 is the console, ttyS1
	# carries the raw test output to a file.
	set +e
	timeout --foreground -k 10 "$TIMEOUT" qemu-system-x86_64 -accel "$accel" -cpu "$cpu" -smp "$SMP" -m "$MEM" \
		-nodefaults -no-user-config -display none -no-reboot \
		-serial stdio -serial "file:$work/results.raw" \
		-kernel "$kernel" -initrd "$work/initrd.img" \
		-append "console=ttyS0 panic=-1 oops=panic rdinit=/init quiet loglevel=3" \
		</dev/null | tr -d '\r' | tee "$work/console.log"
	qrc=${PIPESTATUS[0]}
	set -e
	log "VM ran $(since "$t1") s (qemu exit $qrc)"
	rc=0
	if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
		echo "FAIL the VM did not finish within ${TIMEOUT}s (TEST_VM_TIMEOUT)"
		rc=1
	elif ! grep -q '^TESTVM DONE' "$work/results.raw" 2>/dev/null; then
		echo "FAIL the VM stopped before the end of the tests (qemu exit $qrc; see the console output)"
		rc=1
	fi
	mkdir -p "$work/report"
	# shellcheck disable=SC2086
	summarize "$work/results.raw" "$work/report" $pkgs || sum=1
	[ "$sum" = 0 ] || rc=1
	log "total $(since "$t0") s; logs in $CACHE/last"
	if [ "$rc" = 0 ]; then echo "test-vm: PASS"; else echo "test-vm: FAIL"; fi
	return $rc
}

# Removes a half-done kernel extraction; keeps the logs of the last run and
# removes the rest of its work directory.
cleanup() {
	[ -n "$EXTRACT_TMP" ] && rm -rf "$EXTRACT_TMP"
	[ -n "$WORK" ] || return 0
	local work=$WORK
	rm -rf "$CACHE/last"
	mkdir -p "$CACHE/last"
	cp "$work/console.log" "$work/results.raw" "$CACHE/last/" 2>/dev/null || true
	cp -r "$work/report" "$CACHE/last/" 2>/dev/null || true
	if [ "${TEST_VM_KEEP:-}" = 1 ]; then
		log "work directory kept: $work"
	else
		rm -rf "$work"
	fi
}

EXTRACT_TMP='' WORK=''
trap cleanup EXIT
case ${1:-run} in
run) cmd_run ;;
setup) cmd_setup ;;
clean)
	# Only a directory this script made.
	if [ -e "$CACHE" ]; then
		[ -f "$CACHE/.linen-test-vm" ] || die "$CACHE is not a test-vm cache; not removing it"
		rm -rf "$CACHE"
	fi
	;;
report)
	[ $# -ge 3 ] || die "usage: $0 report RESULTS PKG..."
	mkdir -p "$CACHE"
	touch "$CACHE/.linen-test-vm"
	WORK=$(mktemp -d "$CACHE/report.XXXXXX")
	mkdir -p "$WORK/report"
	raw=$2
	shift 2
	REQUIRE=${TEST_VM_REQUIRE-}
	rc=0
	summarize "$raw" "$WORK/report" "$@" || rc=1
	rm -rf "$WORK"
	WORK=
	exit $rc
	;;
-h | --help | help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' ;;
*) die "unknown command $1 (run, setup, clean)" ;;
esac
