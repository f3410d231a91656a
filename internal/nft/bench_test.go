package nft

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"linen.dev/linen/internal/netns/nstest"
)

// benchPod is pod i of a node: one IPv4 address in 10.128.0.0/16 and one
// TCP host port, like the reference measurements (perf-anchors B5).
func benchPod(i int) PortMapEntry {
	a := netip.AddrFrom4([4]byte{10, 128, byte(i >> 8), byte(i)})
	return PortMapEntry{Network: "bench", ContainerID: fmt.Sprintf("pod%04d", i), IfName: "eth0",
		IPv4: netip.PrefixFrom(a, 16), SNAT: true,
		Mappings: []PortMapping{{Protocol: TCP, HostPort: uint16(20000 + i), ContainerPort: 80}}}
}

func benchMasq(i int) []MasqEntry {
	p := benchPod(i)
	return []MasqEntry{{Network: p.Network, ContainerID: p.ContainerID, IfName: p.IfName, IP: p.IPv4.Addr(), Subnet: p.IPv4.Masked()}}
}

// One ADD and one DEL transaction of a pod's port mapping, with 0 and 300
// other pods' mappings present. The socket stays open (as in a plugin),
// so the times are the transactions themselves.
func BenchmarkPortMap(b *testing.B) {
	for _, existing := range []int{0, 300} {
		b.Run(fmt.Sprintf("existing=%d", existing), func(b *testing.B) {
			ns := nstest.New(b)
			c := dialIn(b, ns)
			for i := range existing {
				if err := AddPortMaps(c, benchPod(i)); err != nil {
					b.Fatal(err)
				}
			}
			x := benchPod(existing)
			add := func(b *testing.B) {
				if err := AddPortMaps(c, x); err != nil {
					b.Fatal(err)
				}
			}
			del := func(known *PortMapEntry) func(b *testing.B) {
				return func(b *testing.B) {
					if err := DelPortMaps(c, x.Network, x.ContainerID, x.IfName, known); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.Run("add", func(b *testing.B) { alternate(b, add, del(&x)) })
			b.Run("del", func(b *testing.B) { alternate(b, del(&x), add) })
			b.Run("del-by-tag", func(b *testing.B) { alternate(b, del(nil), add) })
		})
	}
}

func BenchmarkMasq(b *testing.B) {
	for _, existing := range []int{0, 300} {
		b.Run(fmt.Sprintf("existing=%d", existing), func(b *testing.B) {
			ns := nstest.New(b)
			c := dialIn(b, ns)
			for i := range existing {
				if err := AddMasq(c, benchMasq(i)); err != nil {
					b.Fatal(err)
				}
			}
			x := benchMasq(existing)
			add := func(b *testing.B) {
				if err := AddMasq(c, x); err != nil {
					b.Fatal(err)
				}
			}
			del := func(b *testing.B) {
				if err := DelMasq(c, x[0].Network, x[0].ContainerID, x[0].IfName, x); err != nil {
					b.Fatal(err)
				}
			}
			b.Run("add", func(b *testing.B) { alternate(b, add, del) })
			b.Run("del", func(b *testing.B) { alternate(b, del, add) })
		})
	}
}

// alternate times measured and runs undo (untimed) after each.
func alternate(b *testing.B, measured, undo func(*testing.B)) {
	for i := 0; i < b.N; i++ {
		measured(b)
		b.StopTimer()
		undo(b)
		b.StartTimer()
	}
}

// What releasing the socket costs right after a pod's DEL transaction
// (the wait the plugin entry hands to a helper), and after an ADD.
func BenchmarkRelease(b *testing.B) {
	ns := nstest.New(b)
	c0 := dialIn(b, ns) // restores state between iterations; never closed
	x := benchPod(0)
	dial := func(b *testing.B) (*Conn, func()) {
		c, sock, err := Dial(ns.Fd())
		if err != nil {
			b.Fatal(err)
		}
		return c, func() { c.Close(); sock.Close() }
	}
	must := func(b *testing.B, err error) {
		if err != nil {
			b.Fatal(err)
		}
	}
	const settle = 50 * time.Millisecond // lets earlier destroy work finish
	b.Run("after-add", func(b *testing.B) {
		must(b, DelPortMaps(c0, x.Network, x.ContainerID, x.IfName, &x))
		time.Sleep(settle)
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			c, release := dial(b)
			must(b, AddPortMaps(c, x))
			b.StartTimer()
			release()
			b.StopTimer()
			must(b, DelPortMaps(c0, x.Network, x.ContainerID, x.IfName, &x))
			time.Sleep(settle)
			b.StartTimer()
		}
	})
	b.Run("after-del", func(b *testing.B) {
		must(b, AddPortMaps(c0, x))
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			c, release := dial(b)
			must(b, DelPortMaps(c, x.Network, x.ContainerID, x.IfName, &x))
			b.StartTimer()
			release()
			b.StopTimer()
			must(b, AddPortMaps(c0, x))
			b.StartTimer()
		}
	})
}

// What a plugin process pays for its port mappings: open the socket, look
// the table up, one transaction (the socket's release is not included; it
// is handed to a helper).
func BenchmarkPortMapNewConn(b *testing.B) {
	for _, existing := range []int{0, 300} {
		b.Run(fmt.Sprintf("existing=%d", existing), func(b *testing.B) {
			ns := nstest.New(b)
			c0 := dialIn(b, ns)
			for i := range existing {
				if err := AddPortMaps(c0, benchPod(i)); err != nil {
					b.Fatal(err)
				}
			}
			x := benchPod(existing)
			for _, op := range []string{"add", "del"} {
				b.Run(op, func(b *testing.B) {
					for i := 0; i < b.N; i++ {
						c, sock, err := Dial(ns.Fd())
						if err != nil {
							b.Fatal(err)
						}
						if op == "add" {
							err = AddPortMaps(c, x)
						} else {
							err = DelPortMaps(c, x.Network, x.ContainerID, x.IfName, &x)
						}
						if err != nil {
							b.Fatal(err)
						}
						b.StopTimer()
						c.Close()
						sock.Close()
						if op == "add" {
							err = DelPortMaps(c0, x.Network, x.ContainerID, x.IfName, &x)
						} else {
							err = AddPortMaps(c0, x)
						}
						if err != nil {
							b.Fatal(err)
						}
						time.Sleep(20 * time.Millisecond) // destroy work of the undo
						b.StartTimer()
					}
				})
			}
		})
	}
}
