package udp

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Defaults.
const (
	DefaultPort = 8285 // flannel's
	// Overhead is what the encapsulation adds: outer IPv4 20 + UDP 8.
	Overhead = 28
	// DefaultBatch is the number of datagrams per recvmmsg/sendmmsg.
	DefaultBatch = 64
	// DefaultSocketBuffer is the UDP socket's send and receive buffer
	// (SO_SNDBUFFORCE/SO_RCVBUFFORCE), as wireguard-go sizes its own.
	DefaultSocketBuffer = 7 << 20
	maxBatch            = 1024
)

// Config is the Backend object of net-conf.json for "Type": "udp". Keys
// match case-insensitively; unknown keys (Type) are ignored.
type Config struct {
	Port    int     // UDP port on every node, 0 = DefaultPort
	Offload Offload // data-path speed-ups, all on by default
}

// Offload switches the data path's speed-ups one by one, so that each one's
// effect can be measured, and lets a node fall back to flannel's plain
// one-packet-per-syscall relay. Whatever the settings, the wire format is
// flannel's: one inner IPv4 packet per UDP datagram.
type Offload struct {
	// VnetHdr opens the TUN with IFF_VNET_HDR and TSO/checksum offload: one
	// read returns a TCP super-packet of up to 64 KiB, split here into
	// MTU-sized packets (and UDP super-packets with USO, kernel >= 6.2).
	VnetHdr bool
	// TCPGRO merges received TCP segments of a flow into one super-packet
	// per TUN write (needs VnetHdr).
	TCPGRO bool
	// UDPGSO sends each run of equal-sized datagrams to one peer with a
	// single sendmsg (UDP_SEGMENT). Turned off at run time when the kernel
	// answers EIO (no checksum offload on the egress device).
	UDPGSO bool
	// UDPGRO lets the kernel hand over a run of datagrams from one peer as
	// one buffer (UDP_GRO; used on kernels >= 5.12 only).
	UDPGRO bool
	// Batch is the number of datagrams per recvmmsg/sendmmsg; 1 means one
	// recvmsg/sendmsg per datagram.
	Batch int
	// SocketBuffer is the UDP socket's send and receive buffer in bytes
	// (forced past the sysctl limits when allowed); 0 keeps the kernel's.
	SocketBuffer int
}

// DefaultOffload is every speed-up on.
var DefaultOffload = Offload{VnetHdr: true, TCPGRO: true, UDPGSO: true, UDPGRO: true, Batch: DefaultBatch, SocketBuffer: DefaultSocketBuffer}

// NoOffload is flannel's data path: one packet per syscall, kernel buffers.
var NoOffload = Offload{Batch: 1}

// ParseConfig decodes and validates the Backend object (raw may be empty:
// all defaults). Every problem is reported, each with its field path.
func ParseConfig(raw json.RawMessage) (Config, error) {
	c := Config{Offload: DefaultOffload}
	if len(strings.TrimSpace(string(raw))) == 0 {
		return c, nil
	}
	obj, errs := decodeObject(raw, "Backend")
	for _, kv := range obj {
		field := "Backend." + kv.key
		switch strings.ToLower(kv.key) {
		case "port":
			if err := json.Unmarshal(kv.val, &c.Port); err != nil {
				errs = append(errs, fmt.Errorf("%s: must be an integer, not %s", field, kv.val))
			} else if c.Port < 0 || c.Port > 65535 {
				errs = append(errs, fmt.Errorf("%s: %d is out of range 0-65535 (0 = %d)", field, c.Port, DefaultPort))
			}
		case "offload":
			errs = append(errs, c.Offload.decode(kv.val, field)...)
			errs = append(errs, c.Offload.check(field)...)
		}
	}
	return c, errors.Join(errs...)
}

type keyVal struct {
	key string
	val json.RawMessage
}

// decodeObject returns the members of a JSON object sorted by key,
// reporting keys given twice (in any letter case).
func decodeObject(raw json.RawMessage, path string) ([]keyVal, []error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, []error{fmt.Errorf("%s: %w", path, err)}
	}
	var errs []error
	var out []keyVal
	seen := map[string]string{}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		lk := strings.ToLower(k)
		if prev, dup := seen[lk]; dup {
			errs = append(errs, fmt.Errorf("%s.%s: given twice (also as %s)", path, k, prev))
			continue
		}
		seen[lk] = k
		out = append(out, keyVal{k, obj[k]})
	}
	return out, errs
}

// decode applies an Offload object over o: keys absent keep their value.
func (o *Offload) decode(raw json.RawMessage, path string) []error {
	obj, errs := decodeObject(raw, path)
	for _, kv := range obj {
		field := path + "." + kv.key
		flag := func(dst *bool) {
			if err := json.Unmarshal(kv.val, dst); err != nil {
				errs = append(errs, fmt.Errorf("%s: must be true or false, not %s", field, kv.val))
			}
		}
		num := func(dst *int, lo, hi int) {
			if err := json.Unmarshal(kv.val, dst); err != nil {
				errs = append(errs, fmt.Errorf("%s: must be an integer, not %s", field, kv.val))
			} else if *dst < lo || *dst > hi {
				errs = append(errs, fmt.Errorf("%s: %d is out of range %d-%d", field, *dst, lo, hi))
			}
		}
		switch strings.ToLower(kv.key) {
		case "vnethdr":
			flag(&o.VnetHdr)
		case "tcpgro":
			flag(&o.TCPGRO)
		case "udpgso":
			flag(&o.UDPGSO)
		case "udpgro":
			flag(&o.UDPGRO)
		case "batch":
			num(&o.Batch, 1, maxBatch)
		case "socketbuffer":
			num(&o.SocketBuffer, 0, 1<<30)
		default:
			errs = append(errs, fmt.Errorf("%s: unknown offload (have VnetHdr, TCPGRO, UDPGSO, UDPGRO, Batch, SocketBuffer)", field))
		}
	}
	return errs
}

// check reports combinations that cannot work.
func (o Offload) check(path string) []error {
	if o.TCPGRO && !o.VnetHdr {
		return []error{fmt.Errorf("%s.TCPGRO: needs VnetHdr", path)}
	}
	return nil
}

// EnvOffload is the environment variable ParseOffloadSpec reads in the
// daemon: it overrides the Offload object of net-conf.json on one node
// (for measurements), e.g. LINEN_UDP_OFFLOAD="vnethdr=0,tcpgro=0,batch=1".
const EnvOffload = "LINEN_UDP_OFFLOAD"

// ParseOffloadSpec applies a comma-separated list of key=value pairs (the
// Offload keys, case-insensitive; booleans as 0/1/true/false) over base.
// "none" stands for NoOffload and "all" for DefaultOffload; later pairs
// override them ("none,batch=64").
func ParseOffloadSpec(spec string, base Offload) (Offload, error) {
	o := base
	var errs []error
	for _, item := range strings.Split(spec, ",") {
		item = strings.TrimSpace(item)
		switch strings.ToLower(item) {
		case "":
			continue
		case "none":
			o = NoOffload
			continue
		case "all":
			o = DefaultOffload
			continue
		}
		k, v, ok := strings.Cut(item, "=")
		if !ok {
			errs = append(errs, fmt.Errorf("%s: %q is not key=value", EnvOffload, item))
			continue
		}
		var js string
		switch strings.ToLower(k) {
		case "batch", "socketbuffer":
			if _, err := strconv.Atoi(v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %s: %q is not an integer", EnvOffload, k, v))
				continue
			}
			js = v
		default:
			b, err := strconv.ParseBool(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %s: %q is not a boolean", EnvOffload, k, v))
				continue
			}
			js = strconv.FormatBool(b)
		}
		obj, _ := json.Marshal(map[string]json.RawMessage{k: json.RawMessage(js)})
		errs = append(errs, o.decode(obj, EnvOffload)...)
	}
	errs = append(errs, o.check(EnvOffload)...)
	if len(errs) > 0 {
		return base, errors.Join(errs...)
	}
	return o, nil
}

// port is the UDP port in use.
func (c Config) port() int {
	if c.Port == 0 {
		return DefaultPort
	}
	return c.Port
}
