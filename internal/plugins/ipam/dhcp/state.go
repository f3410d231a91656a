package dhcp

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"linen.dev/linen/internal/atomicfile"
	"linen.dev/linen/internal/plugins/ipam/dhcp/dhcp4"
)

// stateVersion is the format of a lease file.
const stateVersion = 1

// leaseFile is a lease as kept in StateDir: enough to renew and release it
// after a daemon restart.
type leaseFile struct {
	Version   int           `json:"version"`
	Key       Key           `json:"key"`
	Netns     string        `json:"netns"`
	NSDev     uint64        `json:"nsDev"`
	NSIno     uint64        `json:"nsIno"`
	Params    []uint8       `json:"params,omitempty"`
	Provide   []WireOption  `json:"provide,omitempty"`
	Address   string        `json:"address"`
	Server    string        `json:"server"`
	ServerMAC string        `json:"serverMAC,omitempty"`
	Options   []WireOption  `json:"options"`
	Start     time.Time     `json:"start"`
	Duration  time.Duration `json:"duration"`
	T1        time.Duration `json:"t1"`
	T2        time.Duration `json:"t2"`
	State     string        `json:"state"`
	Renewed   int           `json:"renewed"`
}

func (d *Daemon) statePath(k Key) string {
	return filepath.Join(d.cfg.StateDir, "lease-"+shortHash(k.String())+".json")
}

// persistLocked writes ls's file (d.mu held); errors are logged: the
// lease itself is fine, only a restart would lose it.
func (d *Daemon) persistLocked(ls *lease) {
	if d.cfg.StateDir == "" {
		return
	}
	ls.mu.Lock()
	f := leaseFile{Version: stateVersion, Key: ls.key, Netns: ls.netns, NSDev: ls.nsDev, NSIno: ls.nsIno,
		Params: ls.params, Provide: wireOptions(ls.provide),
		Address: ls.cur.Address.String(), Server: ls.cur.Server.String(), ServerMAC: ls.cur.ServerMAC.String(),
		Options: wireOptions(ls.cur.Options), Start: ls.cur.Start, Duration: ls.cur.Duration, T1: ls.cur.T1, T2: ls.cur.T2,
		State: ls.state, Renewed: ls.renewed}
	ls.mu.Unlock()
	if err := writeFileAtomic(d.statePath(ls.key), f); err != nil {
		d.log.Warn("lease not saved", "lease", ls.key.String(), "err", err)
	}
}

func (d *Daemon) removeStateLocked(k Key) {
	if d.cfg.StateDir == "" {
		return
	}
	if err := os.Remove(d.statePath(k)); err != nil && !errors.Is(err, os.ErrNotExist) {
		d.log.Warn("lease file not removed", "lease", k.String(), "err", err)
	}
}

func writeFileAtomic(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return atomicfile.Write(path, b, 0o600)
}

// resume loads StateDir: leases whose namespace still exists are
// maintained again (an expired one is handled at once by its goroutine);
// the others are forgotten, their pods being gone.
func (d *Daemon) resume() error {
	ents, err := os.ReadDir(d.cfg.StateDir)
	if err != nil {
		return fmt.Errorf("read state directory: %w", err)
	}
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, "lease-") || !strings.HasSuffix(name, ".json") {
			continue
		}
		path := filepath.Join(d.cfg.StateDir, name)
		ls, err := d.loadLease(path)
		if err != nil {
			d.log.Warn("lease file ignored and removed", "file", path, "err", err)
			_ = os.Remove(path)
			continue
		}
		ns, err := d.openNS(ls.netns, ls.nsDev, ls.nsIno)
		if err != nil {
			d.log.Info("lease of a vanished namespace forgotten", "lease", ls.key.String(), "address", ls.cur.Address, "err", err)
			_ = os.Remove(path)
			continue
		}
		ns.Close()
		if path != d.statePath(ls.key) {
			_ = os.Remove(path)
		}
		d.mu.Lock()
		d.leases[ls.key] = ls
		d.persistLocked(ls)
		d.mu.Unlock()
		d.start(ls)
		d.log.Info("lease resumed", "lease", ls.key.String(), "address", ls.cur.Address, "state", ls.state, "expiry", ls.cur.Expiry())
	}
	return nil
}

func (d *Daemon) loadLease(path string) (*lease, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var f leaseFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, err
	}
	if f.Version != stateVersion {
		return nil, fmt.Errorf("format version %d, want %d", f.Version, stateVersion)
	}
	addr, err := netip.ParseAddr(f.Address)
	if err != nil || !addr.Is4() {
		return nil, fmt.Errorf("address %q", f.Address)
	}
	server, err := netip.ParseAddr(f.Server)
	if err != nil || !server.Is4() {
		return nil, fmt.Errorf("server %q", f.Server)
	}
	if f.Key.ContainerID == "" || f.Key.Network == "" || f.Key.IfName == "" || f.Netns == "" {
		return nil, errors.New("incomplete key")
	}
	if f.Duration <= 0 || f.T1 <= 0 || f.T2 < f.T1 {
		return nil, errors.New("invalid lease times")
	}
	mac, _ := net.ParseMAC(f.ServerMAC)
	switch f.State {
	case StateBound, StateRenewing, StateRebinding, StateExpired:
	default:
		return nil, fmt.Errorf("state %q", f.State)
	}
	state := f.State
	if state != StateExpired {
		state = StateBound // the loop picks the phase from the times
	}
	return &lease{
		key: f.Key, netns: f.Netns, nsDev: f.NSDev, nsIno: f.NSIno, params: f.Params, provide: fromWire(f.Provide),
		cur: &dhcp4.Lease{Address: addr, Server: server, ServerMAC: mac, Options: fromWire(f.Options),
			Start: f.Start, Duration: f.Duration, T1: f.T1, T2: f.T2},
		state: state, renewed: f.Renewed, stop: make(chan struct{}), done: make(chan struct{}),
	}, nil
}
