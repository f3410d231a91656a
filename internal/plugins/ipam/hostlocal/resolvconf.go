package hostlocal

import (
	"bufio"
	"bytes"
	"os"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
)

// parseResolvConf reads a resolv.conf(5) file into the result's DNS:
// nameserver lines (in order), the domain, the search list (the last
// search line wins, as in the resolver) and options. Comments start with
// '#' or ';'.
func parseResolvConf(path string) (types.DNS, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return types.DNS{}, err
	}
	return parseResolvConfData(b), nil
}

func parseResolvConfData(b []byte) types.DNS {
	var dns types.DNS
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexAny(line, "#;"); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "nameserver":
			dns.Nameservers = append(dns.Nameservers, f[1])
		case "domain":
			dns.Domain = f[1]
		case "search":
			dns.Search = append([]string(nil), f[1:]...)
		case "options":
			dns.Options = append(dns.Options, f[1:]...)
		}
	}
	return dns
}
