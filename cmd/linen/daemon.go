package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"linen.dev/linen/internal/overlay/backend"
	"linen.dev/linen/internal/overlay/daemon"
	"linen.dev/linen/internal/overlay/subnet/etcdstore"
)

// stringsFlag collects a repeatable string flag (--iface a --iface b); a
// value given through the environment may list several, comma-separated.
type stringsFlag struct{ vals *[]string }

func (s stringsFlag) String() string {
	if s.vals == nil {
		return ""
	}
	return strings.Join(*s.vals, ",")
}

func (s stringsFlag) Set(v string) error {
	*s.vals = append(*s.vals, v)
	return nil
}

// envDefaults fills every flag not given on the command line from
// FLANNELD_<NAME> (name upper-cased, '-' as '_'), as flanneld does, so a
// flannel deployment's environment works unchanged.
func envDefaults(fs *flag.FlagSet, getenv func(string) string) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || err != nil {
			return
		}
		key := "FLANNELD_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		v := getenv(key)
		if v == "" {
			return
		}
		if _, ok := f.Value.(stringsFlag); ok {
			for _, part := range strings.Split(v, ",") {
				if e := f.Value.Set(strings.TrimSpace(part)); e != nil {
					err = fmt.Errorf("%s=%q: %w", key, v, e)
				}
			}
			return
		}
		if e := f.Value.Set(v); e != nil {
			err = fmt.Errorf("%s=%q: %w", key, v, e)
		}
	})
	return err
}

func runDaemon(ctx context.Context, c *cli, args []string) error {
	fs := newFlagSet(c, "linen daemon", "[flags]", `
Run the node's overlay agent (flanneld's role): lease a pod subnet from etcd,
program the backend (vxlan, host-gw or udp, from the network configuration
in etcd at <etcd-prefix>/config), write subnet.env for the CNI plugin, and
keep it all current. Flags are flanneld's; each can also be set as
FLANNELD_<FLAG> (upper-case, '-' as '_'). Without --etcd-endpoints the
daemon runs a single-node etcd under --data-dir, initialised from
--net-config-file. SIGTERM leaves the data plane in place.`)
	var endpoints, ifaces, regexes []string
	fs.Var(stringsFlag{&endpoints}, "etcd-endpoints", "etcd `URLs` (repeatable or comma-separated); none: embedded etcd")
	prefix := fs.String("etcd-prefix", etcdstore.DefaultPrefix, "etcd key `prefix`")
	ca := fs.String("etcd-cafile", "", "CA `file` of the etcd servers")
	cert := fs.String("etcd-certfile", "", "client certificate `file`")
	key := fs.String("etcd-keyfile", "", "client key `file`")
	user := fs.String("etcd-username", "", "etcd `user`")
	pass := fs.String("etcd-password", "", "etcd `password`")
	fs.Var(stringsFlag{&ifaces}, "iface", "external interface `name or address` (repeatable; first found wins)")
	fs.Var(stringsFlag{&regexes}, "iface-regex", "`regexp` matched against interface names and addresses (repeatable)")
	publicIP := fs.String("public-ip", "", "IPv4 `address` other nodes reach this one at (default: the interface's)")
	publicIPv6 := fs.String("public-ipv6", "", "IPv6 `address` other nodes reach this one at")
	ipMasq := fs.Bool("ip-masq", false, "masquerade traffic from pods to destinations outside the cluster network")
	fwd := fs.Bool("iptables-forward-rules", true, "accept forwarded traffic of the cluster network (nftables)")
	subnetFile := fs.String("subnet-file", "/run/flannel/subnet.env", "`file` the node's lease is written to for the CNI plugin")
	renew := fs.Int("subnet-lease-renew-margin", 60, "renew the lease this many `minutes` before it expires (1..1439)")
	hip := fs.String("healthz-ip", "0.0.0.0", "`address` of the /healthz, /readyz and /metrics server")
	hport := fs.Int("healthz-port", 0, "`port` of that server (0: off)")
	dataDir := fs.String("data-dir", daemon.DefaultDataDir, "`directory` for backend state and the embedded etcd")
	netConfFile := fs.String("net-config-file", "", "net-conf.json `file` put into the embedded etcd when it has none")
	embedClient := fs.String("embedded-etcd-url", "http://127.0.0.1:2379", "client `URL` of the embedded etcd")
	verbose := fs.Bool("v", false, "debug logging")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("linen daemon: unexpected argument %q (see -h)", pos[0])
	}
	if err := envDefaults(fs.FlagSet, os.Getenv); err != nil {
		return usagef("linen daemon: %v", err)
	}
	if *renew < 1 || *renew > 1439 {
		return usagef("linen daemon: --subnet-lease-renew-margin %d is outside 1..1439", *renew)
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := daemon.EnsureDir(*dataDir); err != nil {
		return err
	}

	var eps []string
	for _, e := range endpoints {
		for _, part := range strings.Split(e, ",") {
			if part = strings.TrimSpace(part); part != "" {
				eps = append(eps, part)
			}
		}
	}
	if len(eps) == 0 {
		// No external etcd: run linen-etcd (next to this binary) as a
		// child process for the life of the daemon.
		etcd, err := daemon.StartLocalEtcd(ctx, daemon.LocalEtcd{
			Binary: filepath.Join(filepath.Dir(exePath()), "linen-etcd"), DataDir: filepath.Join(*dataDir, "etcd"),
			ClientURL: *embedClient, Prefix: *prefix, NetConfFile: *netConfFile, Log: log})
		if err != nil {
			return fmt.Errorf("local etcd: %w", err)
		}
		defer etcd.Stop()
		eps = []string{*embedClient}
	}
	store, err := etcdstore.New(etcdstore.Options{Endpoints: eps, Prefix: *prefix, CAFile: *ca, CertFile: *cert,
		KeyFile: *key, Username: *user, Password: *pass, Log: log})
	if err != nil {
		return err
	}
	defer store.Close()
	return daemon.Run(ctx, daemon.Config{
		Store:        store,
		Iface:        daemon.IfaceOptions{Ifaces: ifaces, Regexes: regexes, PublicIP: *publicIP, PublicIPv6: *publicIPv6},
		IPMasq:       *ipMasq,
		ForwardRules: *fwd,
		SubnetFile:   *subnetFile,
		RenewMargin:  time.Duration(*renew) * time.Minute,
		HealthzAddr:  daemon.HealthzAddr(*hip, *hport),
		DataDir:      *dataDir,
		Backends:     backend.Registry(),
		Log:          log,
	})
}

func exePath() string {
	p, err := os.Executable()
	if err != nil {
		return "linen"
	}
	return p
}
