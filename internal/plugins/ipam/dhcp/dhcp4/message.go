// Package dhcp4 is the DHCPv4 wire format (RFC 2131, 2132), the option
// value formats linen's dhcp IPAM plugin uses (classless static routes of
// RFC 3442, domain search lists of RFC 3397, long options of RFC 3396), the
// IPv4/UDP framing a client needs before it has an address, and a packet
// socket bound to one interface.
//
// Everything here parses bytes from the network: decoders check every
// length before they read and never panic (see the Fuzz targets).
package dhcp4

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// BOOTP operation codes.
const (
	OpRequest = 1
	OpReply   = 2
)

// Message types (option 53).
type MessageType uint8

// The DHCP message types of RFC 2132 section 9.6.
const (
	Discover MessageType = 1
	Offer    MessageType = 2
	Request  MessageType = 3
	Decline  MessageType = 4
	Ack      MessageType = 5
	Nak      MessageType = 6
	Release  MessageType = 7
	Inform   MessageType = 8
)

func (t MessageType) String() string {
	names := [...]string{"", "DHCPDISCOVER", "DHCPOFFER", "DHCPREQUEST", "DHCPDECLINE", "DHCPACK", "DHCPNAK", "DHCPRELEASE", "DHCPINFORM"}
	if int(t) < len(names) && t != 0 {
		return names[t]
	}
	return fmt.Sprintf("DHCP message type %d", uint8(t))
}

// FlagBroadcast asks servers to broadcast their replies (RFC 2131 4.1).
const FlagBroadcast = 0x8000

// Ports.
const (
	ServerPort = 67
	ClientPort = 68
)

const (
	headerLen = 236
	// MinLen is the smallest BOOTP message relays must accept; shorter
	// messages are padded to it.
	MinLen = 300
	// MaxLen bounds what Decode accepts (a jumbo frame's worth).
	MaxLen = 9000
)

var magicCookie = [4]byte{99, 130, 83, 99}

// Message is a decoded DHCPv4 message.
type Message struct {
	Op      uint8
	HType   uint8
	HLen    uint8
	Hops    uint8
	XID     uint32
	Secs    uint16
	Flags   uint16
	CIAddr  netip.Addr
	YIAddr  netip.Addr
	SIAddr  netip.Addr
	GIAddr  netip.Addr
	CHAddr  net.HardwareAddr // HLen bytes (at most 16)
	Options Options
}

// Type is the message type (option 53), 0 when absent or malformed.
func (m *Message) Type() MessageType {
	v := m.Options.Get(OptMessageType)
	if len(v) != 1 {
		return 0
	}
	return MessageType(v[0])
}

// ServerID is option 54, the zero Addr when absent or malformed.
func (m *Message) ServerID() netip.Addr {
	a, _ := m.Options.Addr(OptServerID)
	return a
}

// Errors of Decode.
var (
	ErrShort     = errors.New("dhcp4: message too short")
	ErrLong      = errors.New("dhcp4: message too long")
	ErrNoCookie  = errors.New("dhcp4: no DHCP magic cookie")
	ErrBadOption = errors.New("dhcp4: malformed options")
)

// Decode parses a DHCP message. Options that appear several times are
// concatenated (RFC 3396); options carried in the file and sname fields
// (option 52, overload) are merged after those of the options field.
func Decode(b []byte) (*Message, error) {
	if len(b) < headerLen+4 {
		return nil, ErrShort
	}
	if len(b) > MaxLen {
		return nil, ErrLong
	}
	m := &Message{
		Op: b[0], HType: b[1], HLen: b[2], Hops: b[3],
		XID:    binary.BigEndian.Uint32(b[4:8]),
		Secs:   binary.BigEndian.Uint16(b[8:10]),
		Flags:  binary.BigEndian.Uint16(b[10:12]),
		CIAddr: addr4(b[12:16]),
		YIAddr: addr4(b[16:20]),
		SIAddr: addr4(b[20:24]),
		GIAddr: addr4(b[24:28]),
	}
	hl := int(m.HLen)
	if hl > 16 {
		return nil, fmt.Errorf("dhcp4: hardware address length %d exceeds 16", hl)
	}
	m.CHAddr = append(net.HardwareAddr(nil), b[28:28+hl]...)
	if [4]byte(b[headerLen:headerLen+4]) != magicCookie {
		return nil, ErrNoCookie
	}
	var raw rawOptions
	if err := raw.parse(b[headerLen+4:]); err != nil {
		return nil, err
	}
	if ov := raw.get(OptOverload); len(ov) == 1 {
		// RFC 2132 9.3: file (1), sname (2) or both (3) carry options,
		// file first.
		if ov[0]&1 != 0 {
			if err := raw.parse(b[108:236]); err != nil {
				return nil, err
			}
		}
		if ov[0]&2 != 0 {
			if err := raw.parse(b[44:108]); err != nil {
				return nil, err
			}
		}
	}
	m.Options = raw.options()
	return m, nil
}

func addr4(b []byte) netip.Addr { return netip.AddrFrom4([4]byte(b[:4])) }

// Encode renders the message, padded to MinLen. Options longer than 255
// bytes are split into several instances (RFC 3396).
func (m *Message) Encode() []byte {
	b := make([]byte, headerLen, MinLen+64)
	b[0], b[1], b[2], b[3] = m.Op, m.HType, m.HLen, m.Hops
	binary.BigEndian.PutUint32(b[4:], m.XID)
	binary.BigEndian.PutUint16(b[8:], m.Secs)
	binary.BigEndian.PutUint16(b[10:], m.Flags)
	put4(b[12:], m.CIAddr)
	put4(b[16:], m.YIAddr)
	put4(b[20:], m.SIAddr)
	put4(b[24:], m.GIAddr)
	copy(b[28:44], m.CHAddr)
	b = append(b, magicCookie[:]...)
	for _, o := range m.Options {
		if o.Code == OptPad || o.Code == OptEnd {
			continue
		}
		data := o.Data
		for first := true; first || len(data) > 0; first = false {
			n := min(len(data), 255)
			b = append(b, o.Code, byte(n))
			b = append(b, data[:n]...)
			data = data[n:]
		}
	}
	b = append(b, OptEnd)
	for len(b) < MinLen {
		b = append(b, OptPad)
	}
	return b
}

func put4(dst []byte, a netip.Addr) {
	if a.Is4() {
		v := a.As4()
		copy(dst, v[:])
	}
}

// rawOptions accumulates options in order of first appearance,
// concatenating repeats.
type rawOptions struct {
	order []uint8
	data  map[uint8][]byte
}

func (r *rawOptions) get(code uint8) []byte { return r.data[code] }

// parse reads options until End or the end of b (servers that omit End are
// tolerated); a length that runs past the end is an error.
func (r *rawOptions) parse(b []byte) error {
	if r.data == nil {
		r.data = map[uint8][]byte{}
	}
	for i := 0; i < len(b); {
		code := b[i]
		i++
		switch code {
		case OptPad:
			continue
		case OptEnd:
			return nil
		}
		if i >= len(b) {
			return fmt.Errorf("%w: option %d has no length", ErrBadOption, code)
		}
		n := int(b[i])
		i++
		if i+n > len(b) {
			return fmt.Errorf("%w: option %d of length %d runs past the end", ErrBadOption, code, n)
		}
		if _, seen := r.data[code]; !seen {
			r.order = append(r.order, code)
			r.data[code] = []byte{}
		}
		r.data[code] = append(r.data[code], b[i:i+n]...)
		i += n
	}
	return nil
}

func (r *rawOptions) options() Options {
	out := make(Options, 0, len(r.order))
	for _, c := range r.order {
		out = append(out, Option{Code: c, Data: r.data[c]})
	}
	return out
}
