package dhcp

import (
	"testing"

	"linen.dev/linen/internal/plugins/pluginmain"
	"linen.dev/linen/internal/plugins/plugintest"
)

// FuzzParseConfig: the configuration decoder and validator never panic,
// and a configuration that validates can always be used.
func FuzzParseConfig(f *testing.F) {
	for _, ex := range plugintest.ReadmeExamples(f, "README.md") {
		f.Add(ex, "K8S_POD_NAME=web")
	}
	f.Add([]byte(`{"name":"n","type":"dhcp","request":[{"option":"121"}],"provide":[{"option":"50","fromArg":"IP"}]}`), "IP=10.0.0.5")
	f.Add([]byte(`{"name":"n","ipam":{"provide":[{"option":"ntp-servers","value":"10.0.0.1,10.0.0.2"}]},"prevResult":{"ips":[]}}`), "")
	f.Fuzz(func(t *testing.T, stdin []byte, cniArgs string) {
		_, _, _ = parseLenient(stdin)
		c, err := ParseConfig(stdin)
		if err != nil {
			return
		}
		if c.SocketPath == "" {
			t.Fatal("valid configuration without a socket path")
		}
		args, err := pluginmain.ParseCNIArgs(cniArgs)
		if err != nil {
			return
		}
		opts, err := c.ProvidedOptions(args)
		if err != nil {
			return
		}
		for _, o := range opts {
			if reserved[o.Code] != "" || o.Code == 0 || o.Code == 255 {
				t.Fatalf("reserved option %d provided", o.Code)
			}
		}
	})
}

// FuzzBuildResult: whatever options a server sends, turning a lease into
// a result never panics, and a result always has the leased address.
func FuzzBuildResult(f *testing.F) {
	f.Add([]byte{255, 255, 255, 0}, []byte{10, 0, 0, 1}, []byte{0, 10, 0, 0, 1}, []byte{3, 'a', 'b', 'c', 0})
	f.Add([]byte{}, []byte{1, 2, 3}, []byte{33}, []byte{0xc0, 0})
	f.Fuzz(func(t *testing.T, mask, routers, classless, search []byte) {
		l := &WireLease{Address: "10.1.2.3", Options: []WireOption{{Code: 1, Data: mask}, {Code: 3, Data: routers}, {Code: 121, Data: classless}, {Code: 119, Data: search}}}
		r, err := BuildResult(l, 1)
		if err != nil {
			return
		}
		if len(r.IPs) != 1 || r.IPs[0].Address.IP.String() != "10.1.2.3" {
			t.Fatalf("result IPs %v", r.IPs)
		}
	})
}

// FuzzDecodeRequest: the daemon's request decoder never panics on what a
// client writes to the socket, and what it accepts is complete.
func FuzzDecodeRequest(f *testing.F) {
	f.Add([]byte(`{"version":1,"op":"allocate","containerID":"c","network":"n","ifName":"eth0","netns":"/x","provide":[{"code":12,"data":"d2Vi"}]}`))
	f.Add([]byte(`{"version":1,"op":"gc","network":"n","valid":[{"containerID":"c","ifName":"eth0"}]}`))
	f.Add([]byte(`{"version":1,"op":"status"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		req, werr := DecodeRequest(b)
		if werr != nil {
			if werr.Code == 0 {
				t.Fatal("error without a code")
			}
			return
		}
		switch req.Op {
		case OpAllocate:
			if req.Netns == "" || req.ContainerID == "" || req.IfName == "" {
				t.Fatalf("incomplete allocation accepted: %+v", req)
			}
		case OpRelease, OpCheck:
			if req.ContainerID == "" || req.IfName == "" || req.Network == "" {
				t.Fatalf("incomplete %s accepted: %+v", req.Op, req)
			}
		}
	})
}
