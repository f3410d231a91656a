package bandwidth

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The shaper's parameters, computed from the configuration before anything
// is changed, so that ADD and CHECK agree on every number.

// queueLatency sizes a shaper's queue: packets may wait this long at the
// configured rate on top of the burst (the tc "latency" of a TBF qdisc).
// 1/40 s = 25 ms.
const queueLatencyDiv = 40

// frameOverhead is what a qdisc counts of a frame on top of the MTU (the
// Ethernet header; redirected packets get theirs pushed back).
const frameOverhead = 14

// bucket is a token bucket in the kernel's units.
type bucket struct {
	Rate   uint64 // bytes per second
	Burst  uint64 // bytes the bucket holds (after the kernel's limit)
	Buffer uint32 // Burst as transmission time at Rate, in scheduler ticks
	Limit  uint32 // bytes that may wait in the queue
}

// newBucket converts a limit in bits to a bucket. ticksPerUsec is the
// packet scheduler's clock (/proc/net/psched; 15.625 on current kernels).
//
// The kernel holds the bucket as a 32-bit number of ticks (about 275 s of
// transmission at the rate). A larger burst is capped there: containerd,
// for one, passes 4294967295 bits (512 MiB) to mean "no burst limit", which
// at low rates is more than the kernel can hold. Burst is what the bucket
// really holds, after that cap and the rounding down to whole ticks.
func newBucket(s Shape, ticksPerUsec float64) bucket {
	rate, burst := s.Rate/8, s.Burst/8
	ticks := min(math.Floor(float64(burst)*1e6/float64(rate)*ticksPerUsec), math.MaxUint32)
	b := bucket{Rate: rate, Buffer: uint32(ticks), Burst: burst}
	if held := ticks / ticksPerUsec * float64(rate) / 1e6; held < float64(burst) {
		b.Burst = uint64(held)
	}
	b.Limit = uint32(min(rate/queueLatencyDiv+b.Burst, math.MaxUint32))
	return b
}

// direction is one shaped direction: where its qdisc sits and which
// address of a packet is the other end.
type direction struct {
	name     string // "ingress" or "egress", for messages
	field    string // configuration key of the burst, for messages
	bucket   bucket
	subnets  Subnets
	matchSrc bool // traffic to the pod: the other end is the source
}

// tc handles.
var (
	rootHandle   = netlink.MakeHandle(1, 0)
	shapedClass  = netlink.MakeHandle(1, 1)
	leafHandle   = netlink.MakeHandle(2, 0)
	ingressQdisc = netlink.MakeHandle(0xffff, 0)
)

// Filter priorities: a priority holds filters of one protocol only.
const (
	prioIPv4     = 1
	prioIPv6     = 2
	prioRedirect = 1
)

// ifbPrefix starts the name of every IFB device the plugin creates.
const ifbPrefix = "lbw"

// aliasPrefix starts the alias (IFLA_IFALIAS) of those devices, which
// names their owner.
const aliasPrefix = "linen-bandwidth "

// IFBName is the name of an attachment's IFB device: a prefix and a hash
// of network, container ID and interface, so that DEL and GC find it from
// those alone, without state and without the pod's namespace.
func IFBName(network, containerID, ifName string) string {
	sum := sha256.Sum256([]byte(network + "\x00" + containerID + "\x00" + ifName))
	return ifbPrefix + hex.EncodeToString(sum[:6]) // 3 + 12 = 15 bytes, the kernel's limit
}

// ifbAlias is the owner tag of an IFB device. The kernel keeps at most 255
// bytes; GC reads only the network part, which comes first.
func ifbAlias(network, containerID, ifName string) string {
	s := fmt.Sprintf("%snet=%s id=%s if=%s", aliasPrefix, network, containerID, ifName)
	if len(s) > 255 {
		s = s[:255]
	}
	return s
}

// aliasNetwork returns the network an alias names, and whether it is one
// of ours.
func aliasNetwork(alias string) (string, bool) {
	rest, ok := strings.CutPrefix(alias, aliasPrefix+"net=")
	if !ok {
		return "", false
	}
	net, _, ok := strings.Cut(rest, " id=")
	return net, ok
}

// u32Match is a classifier for one subnet: the protocol of the filter and
// a selector comparing the source or destination address with it.
func u32Match(p netip.Prefix, matchSrc bool) (proto uint16, sel *netlink.TcU32Sel) {
	addr := p.Addr().AsSlice()
	var off int32
	switch {
	case p.Addr().Is4() && matchSrc:
		proto, off = unix.ETH_P_IP, 12
	case p.Addr().Is4():
		proto, off = unix.ETH_P_IP, 16
	case matchSrc:
		proto, off = unix.ETH_P_IPV6, 8
	default:
		proto, off = unix.ETH_P_IPV6, 24
	}
	sel = &netlink.TcU32Sel{Flags: netlink.TC_U32_TERMINAL}
	bits := p.Bits()
	for i := 0; i*32 < bits; i++ {
		n := min(bits-i*32, 32)
		mask := ^uint32(0) << (32 - n)
		val := binary.BigEndian.Uint32(addr[i*4:]) & mask
		sel.Keys = append(sel.Keys, netlink.TcU32Key{Mask: mask, Val: val, Off: off + int32(i*4)})
	}
	if len(sel.Keys) == 0 {
		// A /0: any address of the family.
		sel.Keys = []netlink.TcU32Key{{Off: off}}
	}
	sel.Nkeys = uint8(len(sel.Keys))
	return proto, sel
}

// subnetClass is where a filter sends traffic with the listed subnets: the
// shaped class, or the HTB qdisc itself, which sends it out unshaped
// ("direct"); defaultClass is where everything else goes (a class number
// that does not exist also means direct).
func subnetClass(m SubnetMode) (listed, defaultClass uint32) {
	if m == ShapeOnly {
		return shapedClass, 0
	}
	return rootHandle, 1
}

// htbQuantum is the class quantum: the kernel's own choice (rate/10),
// clamped as it would be, set explicitly so that it does not log a warning.
func htbQuantum(rate uint64) uint32 {
	return uint32(min(max(rate/10, 1000), 200000))
}
