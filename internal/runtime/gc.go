package runtime

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"

	"linen.dev/linen/internal/netns"
)

// GCResult reports what GC removed.
type GCResult struct {
	// Network is the default network that GC ran for.
	Network string
	// Valid are the attachments passed to the plugins as valid: linen's
	// live pods and every attachment in the cache that is not linen's.
	Valid []types.GCAttachment
	// Deleted are the cached linen attachments without a live pod, which
	// got a DEL (a failed one is in GC's error).
	Deleted []Attachment
	// StaleRecords are the pods whose record was removed because their
	// namespace was gone.
	StaleRecords []string
	// OrphanNetns are namespace paths with the Runtime's prefix that had
	// no record and were deleted.
	OrphanNetns []string
}

// Attachment names one attachment of the libcni cache.
type Attachment struct {
	Network     string
	ContainerID string
	IfName      string
	Netns       string
}

// GC removes what lost DELs and crashes left behind, and only what is the
// Runtime's (see the package documentation): DEL for linen attachments in
// the libcni cache without a live pod, plugin GC for the default network
// (cniVersion 1.1.0 and later) with the valid attachments, pod records
// whose namespace is gone and prefixed namespaces without a record. It
// holds the StateDir lock exclusively, so no AddPod or DelPod of this
// StateDir runs meanwhile. It keeps going after a failure and returns what
// it did with every error joined.
func (r *Runtime) GC(ctx context.Context) (res *GCResult, err error) {
	r.init()
	start := time.Now()
	defer func() { r.observe("gc", "", "total", start, err) }()
	net, err := r.Network()
	if err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	unlock, err := r.lock(true)
	if err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	defer unlock()

	names, err := r.recordNames()
	if err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	live := map[string]*record{}
	var stale []*record
	for _, n := range names {
		rec, err := r.readRecord(n)
		if err != nil {
			if errors.Is(err, errRecordNotFound) {
				continue
			}
			return nil, fmt.Errorf("gc: %w (repair it or remove the pod with `linen pod del %s`)", err, n)
		}
		if ns, err := netns.Open(rec.Netns); err == nil {
			ns.Close()
			live[n] = rec
		} else {
			stale = append(stale, rec)
		}
	}

	atts, err := r.cni.GetCachedAttachments("")
	if err != nil {
		return nil, fmt.Errorf("gc: read libcni cache: %w", err)
	}
	res = &GCResult{Network: net.Name}
	valid := map[types.GCAttachment]bool{}
	for _, rec := range live {
		valid[types.GCAttachment{ContainerID: rec.ContainerID, IfName: rec.IfName}] = true
	}
	for _, a := range atts {
		if !r.ownsNetns(a.NetNS) {
			valid[types.GCAttachment{ContainerID: a.ContainerID, IfName: a.IfName}] = true
		}
	}
	for _, a := range atts {
		if !valid[types.GCAttachment{ContainerID: a.ContainerID, IfName: a.IfName}] {
			res.Deleted = append(res.Deleted, Attachment{Network: a.Network, ContainerID: a.ContainerID, IfName: a.IfName, Netns: a.NetNS})
		}
	}
	for a := range valid {
		res.Valid = append(res.Valid, a)
	}
	slices.SortFunc(res.Valid, func(a, b types.GCAttachment) int {
		return cmp.Or(strings.Compare(a.ContainerID, b.ContainerID), strings.Compare(a.IfName, b.IfName))
	})

	var errs []error
	// Attachments of networks other than the default one (the
	// configuration changed since their ADD): DEL with the cached
	// configuration. libcni's GCNetworkList covers the default network.
	for _, a := range atts {
		if a.Network == net.Name || valid[types.GCAttachment{ContainerID: a.ContainerID, IfName: a.IfName}] {
			continue
		}
		if err := r.delAttachment(ctx, a); err != nil {
			errs = append(errs, err)
		}
	}
	t := time.Now()
	gcArgs := &libcni.GCArgs{ValidAttachments: res.Valid}
	cerr := r.inHost(func() error { return r.cni.GCNetworkList(ctx, net.List, gcArgs) })
	r.observe("gc", "", "cni", t, cerr)
	if cerr != nil {
		errs = append(errs, fmt.Errorf("network %q: %w", net.Name, cerr))
	}

	for _, rec := range stale {
		if err := errors.Join(netns.DeleteNamed(rec.Netns), r.removeRecord(rec.Name)); err != nil {
			errs = append(errs, err)
			continue
		}
		res.StaleRecords = append(res.StaleRecords, rec.Name)
	}

	ents, err := os.ReadDir(r.NetnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("list namespaces: %w", err))
	}
	for _, e := range ents {
		n, ok := strings.CutPrefix(e.Name(), r.NetnsPrefix)
		if !ok {
			continue
		}
		if _, ok := live[n]; ok {
			continue
		}
		p := filepath.Join(r.NetnsDir, e.Name())
		if err := netns.DeleteNamed(p); err != nil {
			errs = append(errs, err)
			continue
		}
		res.OrphanNetns = append(res.OrphanNetns, p)
	}
	if err := errors.Join(errs...); err != nil {
		return res, fmt.Errorf("gc: %w", err)
	}
	return res, nil
}

// ownsNetns reports whether a cached netns path is one of the Runtime's pod
// namespaces.
func (r *Runtime) ownsNetns(path string) bool {
	if path == "" || filepath.Dir(path) != filepath.Clean(r.NetnsDir) {
		return false
	}
	return strings.HasPrefix(filepath.Base(path), r.NetnsPrefix)
}
