package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"linen.dev/linen/internal/overlay/subnet"
	"linen.dev/linen/internal/overlay/subnet/etcdstore"
)

func runLeases(ctx context.Context, c *cli, args []string) error {
	return dispatch(ctx, c, "linen leases", []command{
		{"list", "list the subnet leases in etcd", runLeasesList},
		{"delete", "delete a node's lease (the node has left)", runLeasesDelete},
	}, args)
}

func leaseStore(fs *flagSet) func() (*etcdstore.Store, error) {
	var eps []string
	fs.Var(stringsFlag{&eps}, "etcd-endpoints", "etcd `URLs` (repeatable or comma-separated)")
	prefix := fs.String("etcd-prefix", etcdstore.DefaultPrefix, "etcd key `prefix`")
	return func() (*etcdstore.Store, error) {
		if err := envDefaults(fs.FlagSet, os.Getenv); err != nil {
			return nil, err
		}
		var list []string
		for _, e := range eps {
			list = append(list, strings.Split(e, ",")...)
		}
		if len(list) == 0 {
			list = []string{"http://127.0.0.1:2379"}
		}
		return etcdstore.New(etcdstore.Options{Endpoints: list, Prefix: *prefix})
	}
}

func runLeasesList(ctx context.Context, c *cli, args []string) error {
	fs := newFlagSet(c, "linen leases list", "[flags]", "List the subnet leases: subnet, public address, backend, expiry.")
	open := leaseStore(fs)
	asJSON := fs.Bool("json", false, "print the leases as JSON")
	if _, err := parseArgs(fs, args); err != nil {
		return err
	}
	s, err := open()
	if err != nil {
		return err
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ls, _, err := s.Leases(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(ls)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SUBNET\tIPV6 SUBNET\tPUBLIC IP\tBACKEND\tEXPIRES")
	for _, l := range ls {
		exp := "never (reservation)"
		if !l.Expiration.IsZero() {
			exp = l.Expiration.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", pfx(l.Subnet), pfx(l.IPv6Subnet), l.Attrs.PublicIP, l.Attrs.BackendType, exp)
	}
	return tw.Flush()
}

func pfx(p netip.Prefix) string {
	if !p.IsValid() {
		return "-"
	}
	return p.String()
}

func runLeasesDelete(ctx context.Context, c *cli, args []string) error {
	fs := newFlagSet(c, "linen leases delete", "[flags] SUBNET...", `
Delete the leases of the given subnets (e.g. 10.244.3.0/24): the other nodes
remove their routes to it. A running daemon that owns it acquires a lease
again.`)
	open := leaseStore(fs)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("linen leases delete: name at least one SUBNET")
	}
	s, err := open()
	if err != nil {
		return err
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ls, _, err := s.Leases(ctx)
	if err != nil {
		return err
	}
	for _, want := range pos {
		p, err := netip.ParsePrefix(want)
		if err != nil {
			return usagef("linen leases delete: %q is not a subnet", want)
		}
		found := false
		for _, l := range ls {
			if l.Subnet == p.Masked() || l.IPv6Subnet == p.Masked() {
				found = true
				if err := s.DeleteLease(ctx, subnet.Lease{Subnet: l.Subnet, IPv6Subnet: l.IPv6Subnet}); err != nil {
					return err
				}
				fmt.Fprintf(c.stdout, "deleted lease %s\n", l.Key())
			}
		}
		if !found {
			return fmt.Errorf("no lease for %s", want)
		}
	}
	return nil
}
