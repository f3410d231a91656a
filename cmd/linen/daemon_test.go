package main

import (
	"flag"
	"io"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// Flags not given on the command line come from FLANNELD_*, as flanneld
// reads them; a given flag wins; list flags split on commas.
func TestEnvDefaults(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var eps, ifaces []string
	fs.Var(stringsFlag{&eps}, "etcd-endpoints", "")
	fs.Var(stringsFlag{&ifaces}, "iface", "")
	masq := fs.Bool("ip-masq", false, "")
	file := fs.String("subnet-file", "/run/flannel/subnet.env", "")
	margin := fs.Int("subnet-lease-renew-margin", 60, "")
	if err := fs.Parse([]string{"--subnet-file", "/tmp/given"}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"FLANNELD_ETCD_ENDPOINTS":            "http://a:2379,http://b:2379",
		"FLANNELD_IFACE":                     "eth1",
		"FLANNELD_IP_MASQ":                   "true",
		"FLANNELD_SUBNET_FILE":               "/tmp/from-env",
		"FLANNELD_SUBNET_LEASE_RENEW_MARGIN": "30",
	}
	if err := envDefaults(fs, func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"http://a:2379", "http://b:2379"}, eps); diff != "" {
		t.Error(diff)
	}
	if !*masq || *file != "/tmp/given" || *margin != 30 || len(ifaces) != 1 {
		t.Errorf("masq %v file %s margin %d ifaces %v", *masq, *file, *margin, ifaces)
	}
	env["FLANNELD_IP_MASQ"] = "maybe"
	fs2 := flag.NewFlagSet("y", flag.ContinueOnError)
	fs2.Bool("ip-masq", false, "")
	if err := envDefaults(fs2, func(k string) string { return env[k] }); err == nil {
		t.Error("bad boolean accepted")
	}
}
