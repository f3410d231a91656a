package hostlocal

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"golang.org/x/sys/unix"

	"linen.dev/linen/internal/plugins/pluginmain"
)

// Plugin returns the host-local IPAM plugin.
func Plugin() *pluginmain.Plugin {
	return &pluginmain.Plugin{
		Name:   "host-local",
		About:  "linen host-local: IPAM from ranges, leases kept on the node",
		Add:    cmdAdd,
		Del:    cmdDel,
		Check:  cmdCheck,
		GC:     cmdGC,
		Status: cmdStatus,
	}
}

func cmdAdd(ctx context.Context, env *pluginmain.Env, a *pluginmain.Args) (types.Result, error) {
	conf, err := ParseConfig(a.StdinData, a.Args)
	if err != nil {
		return nil, err
	}
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion}
	if conf.ResolvConf != "" {
		dns, err := parseResolvConf(conf.ResolvConf)
		if err != nil {
			return nil, fmt.Errorf("ipam.resolvConf: %w", err)
		}
		res.DNS = dns
	}
	ips, err := Allocate(ctx, env, conf, a.ContainerID, a.IfName)
	if err != nil {
		return nil, err
	}
	for i, ip := range ips {
		r := conf.Sets[i].Ranges[conf.Sets[i].rangeOf(ip)]
		res.IPs = append(res.IPs, &current.IPConfig{
			Address: net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(r.Subnet.Bits(), ip.BitLen())},
			Gateway: r.Gateway.AsSlice(),
		})
	}
	for _, r := range conf.Routes {
		res.Routes = append(res.Routes, r.CNI())
	}
	return res, nil
}

// Allocate reserves one address from every range set of conf for the
// attachment (id, ifName) and returns them in set order. On failure nothing
// reserved by this call is left behind.
func Allocate(ctx context.Context, env *pluginmain.Env, conf *Config, id, ifName string) (out []netip.Addr, err error) {
	st, err := openStore(ctx, conf.Dir(), true)
	if err != nil {
		return nil, err
	}
	defer st.close()
	if err := st.load(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			for _, ip := range out {
				if rerr := st.release(ip); rerr != nil {
					err = errors.Join(err, rerr)
				}
			}
			out = nil
		}
		logCommit(env, st)
	}()
	owner := Owner{ID: id, IfName: ifName}
	held, err := st.ownedBy(id, ifName, false)
	if err != nil {
		return nil, err
	}
	for i := range conf.Sets {
		set := &conf.Sets[i]
		for _, ip := range held {
			if set.Contains(ip) {
				return out, fmt.Errorf("%s: %s is already reserved for %s: duplicate allocation is not allowed", set.Field, ip, owner)
			}
		}
		var got netip.Addr
		if want := set.Requested; want.IsValid() {
			ok, err := st.reserve(want, owner)
			if err != nil {
				return out, err
			}
			if !ok {
				holder := "another attachment"
				if o, err := st.readOwner(want); err == nil {
					holder = o.String()
				}
				return out, fmt.Errorf("%s: requested address %s is already reserved for %s", set.Field, want, holder)
			}
			got = want
		} else {
			for c := range set.Candidates(st.lastReserved(i)) {
				ok, err := st.reserve(c, owner)
				if err != nil {
					return out, err
				}
				if ok {
					got = c
					break
				}
			}
			if !got.IsValid() {
				return out, fmt.Errorf("%s: no free address in %s", set.Field, set.Subnets())
			}
		}
		out = append(out, got)
	}
	// The round-robin hints move only when the whole ADD succeeds, so a
	// failed ADD leaves no trace at all.
	for i, ip := range out {
		if err := st.setLastReserved(i, ip); err != nil {
			return out, err
		}
	}
	return out, nil
}

func logCommit(env *pluginmain.Env, st *store) {
	if err := st.commit(); err != nil && env != nil && env.Log != nil {
		// Not fatal: the reservations are on disk; the next call rebuilds.
		env.Log.Warn("host-local: index not written", "dir", st.dir, "err", err)
	}
}

func cmdDel(ctx context.Context, env *pluginmain.Env, a *pluginmain.Args) error {
	lc, err := parseLenient(a.StdinData)
	if err != nil {
		return err
	}
	_, err = Release(ctx, env, lc.DataDir, lc.Network, a.ContainerID, a.IfName, lc.PrevIPs, lc.Sets)
	return err
}

// Release frees every reservation of the attachment (id, ifName) in the
// network's directory, including legacy ID-only ones, and returns the
// addresses freed. A missing directory or file is not an error.
//
// When the index cannot be trusted, the addresses of prevIPs (the cached ADD
// result) are checked first: if they account for all sets range sets, the
// directory is not read file by file (the next operation will).
func Release(ctx context.Context, env *pluginmain.Env, dataDir, network, id, ifName string, prevIPs []netip.Addr, sets int) ([]netip.Addr, error) {
	st, err := openStore(ctx, dirOf(dataDir, network), false)
	if errors.Is(err, errNoDir) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer st.close()
	defer logCommit(env, st)
	trusted, err := st.loadIndex()
	if err != nil {
		return nil, err
	}
	var freed []netip.Addr
	if !trusted {
		for _, ip := range prevIPs {
			o, err := st.readOwner(ip)
			if err != nil || !o.Matches(id, ifName) {
				continue
			}
			if err := st.release(ip); err != nil {
				return freed, err
			}
			freed = append(freed, ip)
		}
		if sets > 0 && len(freed) >= sets {
			return freed, nil
		}
		if err := st.rebuild(); err != nil {
			return freed, err
		}
	}
	owned, err := st.ownedBy(id, ifName, true)
	if err != nil {
		return freed, err
	}
	var errs []error
	for _, ip := range owned {
		if err := st.release(ip); err != nil {
			errs = append(errs, err)
			continue
		}
		freed = append(freed, ip)
	}
	return freed, errors.Join(errs...)
}

func dirOf(dataDir, network string) string {
	return (&Config{DataDir: dataDir, Network: network}).Dir()
}

func cmdCheck(ctx context.Context, env *pluginmain.Env, a *pluginmain.Args) error {
	conf, err := ParseConfig(a.StdinData, a.Args)
	if err != nil {
		return err
	}
	held, err := Reservations(ctx, env, conf.DataDir, conf.Network)
	if err != nil {
		return err
	}
	mine := map[netip.Addr]bool{}
	for ip, o := range held {
		if o.Matches(a.ContainerID, a.IfName) {
			mine[ip] = true
		}
	}
	if len(mine) == 0 {
		return fmt.Errorf("host-local: no address is reserved for container %q interface %q in network %q", a.ContainerID, a.IfName, conf.Network)
	}
	for _, ip := range conf.PrevIPs {
		for i := range conf.Sets {
			if conf.Sets[i].Contains(ip) && !mine[ip] {
				if o, ok := held[ip]; ok {
					return fmt.Errorf("host-local: prevResult address %s is reserved for %s, not for container %q interface %q", ip, o, a.ContainerID, a.IfName)
				}
				return fmt.Errorf("host-local: prevResult address %s is not reserved (container %q interface %q)", ip, a.ContainerID, a.IfName)
			}
		}
	}
	return nil
}

// Reservations returns every reservation of the network.
func Reservations(ctx context.Context, env *pluginmain.Env, dataDir, network string) (map[netip.Addr]Owner, error) {
	st, err := openStore(ctx, dirOf(dataDir, network), false)
	if errors.Is(err, errNoDir) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer st.close()
	if err := st.load(); err != nil {
		return nil, err
	}
	leases, err := st.all()
	if err != nil {
		return nil, err
	}
	logCommit(env, st)
	out := make(map[netip.Addr]Owner, len(leases))
	for ip, l := range leases {
		out[ip] = l.Owner
	}
	return out, nil
}

func cmdGC(ctx context.Context, env *pluginmain.Env, a *pluginmain.Args) error {
	lc, err := parseLenient(a.StdinData)
	if err != nil {
		return err
	}
	valid, err := pluginmain.ValidAttachments(a.StdinData)
	if err != nil {
		return err
	}
	st, err := openStore(ctx, dirOf(lc.DataDir, lc.Network), false)
	if errors.Is(err, errNoDir) {
		return nil
	}
	if err != nil {
		return err
	}
	defer st.close()
	defer logCommit(env, st)
	if err := st.load(); err != nil {
		return err
	}
	leases, err := st.all()
	if err != nil {
		return err
	}
	ids := map[string]bool{}
	for k := range valid {
		ids[k[0]] = true
	}
	var errs []error
	for ip, l := range leases {
		keep := valid.Keep(l.ID, l.IfName)
		if l.Legacy {
			keep = ids[l.ID]
		}
		if !keep {
			if err := st.release(ip); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// cmdStatus reports whether ADD can succeed: the data directory must be
// writable and every range set must have a free address. When the ranges
// come only from the runtime (the ipRanges capability), which STATUS does
// not pass, only the directory is checked.
func cmdStatus(ctx context.Context, env *pluginmain.Env, a *pluginmain.Args) error {
	conf, err := ParseConfig(a.StdinData, "")
	if err != nil {
		lc, lerr := parseLenient(a.StdinData)
		if lerr != nil || !lc.NoRanges || lc.Network == "" {
			return err
		}
		conf = &Config{Network: lc.Network, DataDir: lc.DataDir}
	}
	dir := conf.Dir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return pluginmain.Errorf(pluginmain.CodeNotAvailable, "host-local: data directory %s cannot be created: %v", dir, err)
	}
	if err := unix.Access(dir, unix.W_OK); err != nil {
		return pluginmain.Errorf(pluginmain.CodeNotAvailable, "host-local: data directory %s is not writable: %v", dir, err)
	}
	st, err := openStore(ctx, dir, true)
	if err != nil {
		return pluginmain.Errorf(pluginmain.CodeNotAvailable, "host-local: data directory %s: %v", dir, err)
	}
	defer st.close()
	if err := st.load(); err != nil {
		return pluginmain.Errorf(pluginmain.CodeNotAvailable, "host-local: data directory %s: %v", dir, err)
	}
	leases, err := st.all()
	if err != nil {
		return pluginmain.Errorf(pluginmain.CodeNotAvailable, "host-local: data directory %s: %v", dir, err)
	}
	logCommit(env, st)
	var full []string
	for i := range conf.Sets {
		if !conf.Sets[i].hasFree(leases) {
			full = append(full, fmt.Sprintf("%s: no free address in %s", conf.Sets[i].Field, conf.Sets[i].Subnets()))
		}
	}
	if len(full) > 0 {
		return pluginmain.Errorf(pluginmain.CodeNotAvailable, "host-local cannot allocate: %s", strings.Join(full, "; "))
	}
	return nil
}
