package dhcp

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"time"

	"linen.dev/linen/internal/plugins/ipam/dhcp/dhcp4"
	"linen.dev/linen/internal/plugins/pluginmain"
)

// The plugin and the daemon speak JSON over the unix socket: one request
// object, one response object, each on one line, then the daemon closes
// the connection. Every message carries the protocol version; a daemon
// answers a version it does not speak with an error naming its own.

// ProtoVersion is the protocol version this build speaks.
const ProtoVersion = 1

// Operations.
const (
	OpAllocate = "allocate"
	OpRelease  = "release"
	OpCheck    = "check"
	OpGC       = "gc"
	OpStatus   = "status"
)

// maxMessage bounds what either side reads.
const maxMessage = 1 << 20

// Key identifies a lease.
type Key struct {
	ContainerID string `json:"containerID"`
	Network     string `json:"network"`
	IfName      string `json:"ifName"`
}

func (k Key) String() string { return k.ContainerID + "/" + k.Network + "/" + k.IfName }

// WireOption is an option with its data.
type WireOption struct {
	Code uint8  `json:"code"`
	Data []byte `json:"data"`
}

// Attachment is one valid attachment of a GC request.
type Attachment struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
}

// Request is what the plugin sends.
type Request struct {
	Version int    `json:"version"`
	Op      string `json:"op"`
	Key
	// Netns is CNI_NETNS (allocate, release, check).
	Netns string `json:"netns,omitempty"`
	// Params is the parameter request list, Provide the options sent.
	Params  []uint8      `json:"params,omitempty"`
	Provide []WireOption `json:"provide,omitempty"`
	// Valid lists the attachments of Network that GC keeps.
	Valid []Attachment `json:"valid,omitempty"`
}

// WireLease is a lease as the daemon reports it.
type WireLease struct {
	Address string       `json:"address"`
	Server  string       `json:"server"`
	State   string       `json:"state"`
	Expiry  time.Time    `json:"expiry,omitzero"`
	Renewed int          `json:"renewed"`
	Options []WireOption `json:"options"`
}

// WireError is an error with its CNI code.
type WireError struct {
	Code uint   `json:"code"`
	Msg  string `json:"msg"`
}

// Response is what the daemon answers.
type Response struct {
	Version int        `json:"version"`
	Lease   *WireLease `json:"lease,omitempty"`
	// Released counts the leases a release or GC dropped.
	Released int        `json:"released,omitempty"`
	Error    *WireError `json:"error,omitempty"`
}

// Lease states.
const (
	StateBound     = "bound"
	StateRenewing  = "renewing"
	StateRebinding = "rebinding"
	StateExpired   = "expired"
)

// ErrDaemonUnreachable is returned (wrapped) when nothing answers on the
// socket.
var ErrDaemonUnreachable = errors.New("the dhcp daemon does not answer")

// Call sends req to the daemon at socketPath and returns its response; a
// daemon error becomes a CNI error with the daemon's code.
func Call(ctx context.Context, socketPath string, req *Request) (*Response, error) {
	req.Version = ProtoVersion
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socketPath)
	if err != nil {
		return nil, fmt.Errorf("%w on %s: %v (start it with \"linen-cni dhcp daemon\")", ErrDaemonUnreachable, socketPath, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("%w on %s: send %s request: %v", ErrDaemonUnreachable, socketPath, req.Op, err)
	}
	line, err := readLine(conn)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("dhcp daemon on %s: %s request: %w", socketPath, req.Op, ctx.Err())
		}
		return nil, fmt.Errorf("dhcp daemon on %s: read %s response: %v", socketPath, req.Op, err)
	}
	var resp Response
	if err := json.Unmarshal(line, &resp); err != nil {
		return nil, fmt.Errorf("dhcp daemon on %s: undecodable %s response: %v", socketPath, req.Op, err)
	}
	if resp.Error != nil {
		code := resp.Error.Code
		if code == 0 {
			code = pluginmain.CodeInternal
		}
		return &resp, pluginmain.Errorf(code, "%s", resp.Error.Msg)
	}
	if resp.Version != ProtoVersion {
		return nil, fmt.Errorf("dhcp daemon on %s speaks protocol version %d, this plugin %d", socketPath, resp.Version, ProtoVersion)
	}
	return &resp, nil
}

// readLine reads one newline-terminated message of at most maxMessage
// bytes (a last line without newline is accepted at EOF).
func readLine(r io.Reader) ([]byte, error) {
	br := bufio.NewReaderSize(io.LimitReader(r, maxMessage+1), 4096)
	var out []byte
	for {
		chunk, err := br.ReadSlice('\n')
		out = append(out, chunk...)
		if len(out) > maxMessage {
			return nil, fmt.Errorf("message longer than %d bytes", maxMessage)
		}
		switch {
		case err == nil:
			return out, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(out) > 0:
			return out, nil
		default:
			return nil, err
		}
	}
}

// DecodeRequest parses and checks a request read from the socket.
func DecodeRequest(b []byte) (*Request, *WireError) {
	var req Request
	if err := json.Unmarshal(b, &req); err != nil {
		return nil, &WireError{Code: pluginmain.CodeDecoding, Msg: fmt.Sprintf("request: %v", err)}
	}
	if req.Version != ProtoVersion {
		return nil, &WireError{Code: pluginmain.CodeIncompatibleVersion, Msg: fmt.Sprintf("request: protocol version %d is not spoken by this daemon (it speaks %d)", req.Version, ProtoVersion)}
	}
	switch req.Op {
	case OpStatus:
		return &req, nil
	case OpGC:
		if req.Network == "" {
			return nil, &WireError{Code: pluginmain.CodeInvalidConfig, Msg: "gc request: network is empty"}
		}
		return &req, nil
	case OpAllocate, OpRelease, OpCheck:
	default:
		return nil, &WireError{Code: pluginmain.CodeInvalidConfig, Msg: fmt.Sprintf("request: unknown operation %q", req.Op)}
	}
	if req.ContainerID == "" || req.Network == "" || req.IfName == "" {
		return nil, &WireError{Code: pluginmain.CodeInvalidConfig, Msg: fmt.Sprintf("%s request: containerID, network and ifName are required", req.Op)}
	}
	if why := pluginmain.ValidateIfName(req.IfName); why != "" {
		return nil, &WireError{Code: pluginmain.CodeInvalidEnv, Msg: fmt.Sprintf("%s request: ifName %q %s", req.Op, req.IfName, why)}
	}
	if req.Op == OpAllocate && req.Netns == "" {
		return nil, &WireError{Code: pluginmain.CodeInvalidEnv, Msg: "allocate request: netns is empty"}
	}
	for _, o := range req.Provide {
		if o.Code == dhcp4.OptPad || o.Code == dhcp4.OptEnd || reserved[o.Code] != "" {
			return nil, &WireError{Code: pluginmain.CodeInvalidConfig, Msg: fmt.Sprintf("%s request: option %d cannot be provided", req.Op, o.Code)}
		}
		if len(o.Data) > 255*4 {
			return nil, &WireError{Code: pluginmain.CodeInvalidConfig, Msg: fmt.Sprintf("%s request: option %d is too long", req.Op, o.Code)}
		}
	}
	return &req, nil
}

func wireOptions(o dhcp4.Options) []WireOption {
	out := make([]WireOption, 0, len(o))
	for _, x := range o {
		out = append(out, WireOption{Code: x.Code, Data: x.Data})
	}
	return out
}

func fromWire(w []WireOption) dhcp4.Options {
	out := make(dhcp4.Options, 0, len(w))
	for _, x := range w {
		out = append(out, dhcp4.Option{Code: x.Code, Data: x.Data})
	}
	return out
}

func shortHash(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:8])
}

// leaseAddr parses a WireLease's address.
func leaseAddr(l *WireLease) (netip.Addr, error) {
	a, err := netip.ParseAddr(l.Address)
	if err != nil || !a.Is4() {
		return netip.Addr{}, fmt.Errorf("daemon returned %q, not an IPv4 address", l.Address)
	}
	return a, nil
}

// codeName renders an option code for messages.
func codeName(c uint8) string {
	return dhcp4.ByCode(c).Name + " (" + strconv.Itoa(int(c)) + ")"
}
