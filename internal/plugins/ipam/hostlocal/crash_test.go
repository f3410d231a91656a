package hostlocal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"linen.dev/linen/internal/plugins/pluginmain"
)

// crashEnv, in the environment of this test binary, makes TestMain run one
// operation that exits the process at a given step (crashChild) instead of
// the tests.
const crashEnv = "LINEN_HOSTLOCAL_TEST_CRASH"

// crashCode is the exit status of a child that stopped at its step.
const crashCode = 86

type crashSpec struct {
	Op   string // add, del, gc
	Conf string // the configuration (stdin)
	ID   string // the attachment's container ID (interface eth0)
	Step int    // exit at the Step-th step
}

// crashChild runs the operation of spec and exits at its step without
// running anything else: no deferred rollback, no commit, the lock released
// by the kernel. It returns 0 when the operation ended before the step.
func crashChild(spec string) int {
	var c crashSpec
	if err := json.Unmarshal([]byte(spec), &c); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	n := 0
	ctx := context.WithValue(context.Background(), stepHookKey{}, func(string) {
		if n++; n == c.Step {
			os.Exit(crashCode)
		}
	})
	a := &pluginmain.Args{ContainerID: c.ID, IfName: "eth0", StdinData: []byte(c.Conf)}
	var err error
	switch c.Op {
	case "add":
		_, err = cmdAdd(ctx, nil, a)
	case "del":
		err = cmdDel(ctx, nil, a)
	case "gc":
		err = cmdGC(ctx, nil, a)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	return 0
}

// TestCrashAtEveryStep stops a real plugin process at every step of an
// operation in turn, and checks what the next operations make of the
// directory: the index is either right or not trusted, every reservation
// file is seen with its owner, DEL frees what the crashed ADD reserved, and
// no address is handed out twice.
func TestCrashAtEveryStep(t *testing.T) {
	t.Parallel()
	type scenario struct {
		name   string
		ranges string
		setup  func(t *testing.T, conf *Config)
		op     string
		id     string
		gc     string // the valid attachments, for gc
	}
	ctx := context.Background()
	add := func(t *testing.T, conf *Config, ids ...string) {
		t.Helper()
		for _, id := range ids {
			if _, err := Allocate(ctx, nil, conf, id, "eth0"); err != nil {
				t.Fatal(err)
			}
		}
	}
	del := func(t *testing.T, conf *Config, ids ...string) {
		t.Helper()
		for _, id := range ids {
			if _, err := Release(ctx, nil, conf.DataDir, conf.Network, id, "eth0", nil, len(conf.Sets)); err != nil {
				t.Fatal(err)
			}
		}
	}
	scenarios := []scenario{{
		name: "add on a trusted index", ranges: `[[{"subnet":"10.21.0.0/24"}],[{"subnet":"2001:db8:21::/64"}]]`,
		setup: func(t *testing.T, conf *Config) { add(t, conf, "a", "b", "c"); del(t, conf, "b") },
		op:    "add", id: "victim",
	}, {
		name: "add after a foreign change (rebuild and compaction)", ranges: `[[{"subnet":"10.22.0.0/24"}]]`,
		setup: func(t *testing.T, conf *Config) {
			add(t, conf, "a", "b")
			if err := os.WriteFile(filepath.Join(conf.Dir(), "10.22.0.100"), []byte("ref\r\neth0"), 0o600); err != nil {
				t.Fatal(err)
			}
		},
		op: "add", id: "victim",
	}, {
		name: "failed add, rolled back", ranges: `[[{"subnet":"10.23.0.0/24"}],[{"subnet":"10.123.0.0/30"}]]`,
		setup: func(t *testing.T, conf *Config) { add(t, conf, "filler") },
		op:    "add", id: "victim",
	}, {
		name: "del that compacts", ranges: `[[{"subnet":"10.24.0.0/24"}]]`,
		setup: func(t *testing.T, conf *Config) {
			add(t, conf, "a", "b", "c")
			for i := 0; ; i++ {
				if i > 4*compactSlack {
					t.Fatal("setup: no compaction came due")
				}
				add(t, conf, "victim")
				if ds := readDiskState(t, conf.Dir()); ds.seal.lines+2 > 2*(ds.seal.live-1)+compactSlack {
					return // the DEL of victim compacts
				}
				del(t, conf, "victim")
			}
		},
		op: "del", id: "victim",
	}, {
		name: "gc", ranges: `[[{"subnet":"10.25.0.0/24"}]]`,
		setup: func(t *testing.T, conf *Config) {
			add(t, conf, "a", "victim", "c", "d")
			if err := os.WriteFile(filepath.Join(conf.Dir(), "10.25.0.100"), []byte("victim"), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := Reservations(ctx, nil, conf.DataDir, conf.Network); err != nil {
				t.Fatal(err)
			}
		},
		op: "gc", id: "victim", gc: `[{"containerID":"a","ifname":"eth0"},{"containerID":"d","ifname":"eth0"}]`,
	}}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			for step := 1; ; step++ {
				if step > 40 {
					t.Fatal("more than 40 steps: the operation never ended")
				}
				data := t.TempDir()
				conf := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"crash","ipam":{"type":"host-local","dataDir":%q,"ranges":%s}`, data, sc.ranges)
				if sc.gc != "" {
					conf += `,"cni.dev/valid-attachments":` + sc.gc
				}
				conf += "}"
				c, err := ParseConfig([]byte(conf), "")
				if err != nil {
					t.Fatal(err)
				}
				sc.setup(t, c)
				before := readDiskState(t, c.Dir()).files

				spec, _ := json.Marshal(crashSpec{Op: sc.op, Conf: conf, ID: sc.id, Step: step})
				cmd := exec.Command(os.Args[0])
				cmd.Env = append(os.Environ(), crashEnv+"="+string(spec))
				out, err := cmd.CombinedOutput()
				var ee *exec.ExitError
				if err == nil {
					if step == 1 {
						t.Fatalf("the operation ran no step: %s", out)
					}
					t.Logf("%d steps", step-1)
					return
				}
				if !errors.As(err, &ee) || ee.ExitCode() != crashCode {
					t.Fatalf("child at step %d: %v: %s", step, err, out)
				}
				// The attachments whose reservations the operation may
				// remove, and the operation that removes them after the
				// crash: DEL for ADD and DEL, as a runtime does after a
				// failed ADD; GC again for GC.
				affected := func(o Owner) bool { return o.ID == sc.id }
				redo := func() error {
					_, err := Release(ctx, nil, c.DataDir, c.Network, sc.id, "eth0", nil, len(c.Sets))
					return err
				}
				if sc.op == "gc" {
					affected = func(o Owner) bool { return !strings.Contains(sc.gc, fmt.Sprintf("%q", o.ID)) }
					redo = func() error {
						return cmdGC(ctx, nil, &pluginmain.Args{StdinData: []byte(conf)})
					}
				}
				checkRecovery(t, c, before, affected, redo, fmt.Sprintf("crash at step %d", step))
			}
		})
	}
}

// checkRecovery checks the directory after a crash of an operation that
// may add or remove the reservations of affected attachments, then runs
// redo, which must remove them all.
func checkRecovery(t *testing.T, conf *Config, before map[netip.Addr]Owner, affected func(Owner) bool, redo func() error, when string) {
	t.Helper()
	ctx := context.Background()
	dir := conf.Dir()
	ds := checkDisk(t, dir, when)
	// Nothing else changed.
	for a, o := range before {
		if !affected(o) && ds.files[a] != o {
			t.Errorf("%s: %s of %s is now %+v", when, a, o, ds.files[a])
		}
	}
	for a, o := range ds.files {
		if _, ok := before[a]; !ok && !affected(o) {
			t.Errorf("%s: %s appeared for %+v", when, a, o)
		}
	}
	// The next operation sees every file with its owner.
	held, err := Reservations(ctx, nil, conf.DataDir, conf.Network)
	if err != nil {
		t.Fatalf("%s: Reservations: %v", when, err)
	}
	if len(held) == 0 {
		held = map[netip.Addr]Owner{}
	}
	if diff := cmp.Diff(ds.files, held, cmpLeases...); diff != "" {
		t.Errorf("%s: Reservations (-files +got):\n%s", when, diff)
	}
	if err := redo(); err != nil {
		t.Fatalf("%s: DEL/GC: %v", when, err)
	}
	after := checkDisk(t, dir, when+", then DEL/GC")
	for a, o := range after.files {
		if affected(o) {
			t.Errorf("%s: DEL/GC left %s of %+v", when, a, o)
		}
	}
	if !after.trusted {
		t.Errorf("%s: index not trusted after DEL/GC", when)
	}
	// A new ADD gets addresses nobody holds.
	got, err := Allocate(ctx, nil, conf, "fresh", "eth0")
	if err != nil && !strings.Contains(err.Error(), "no free address") {
		t.Fatalf("%s: ADD: %v", when, err)
	}
	for _, a := range got {
		if o, taken := after.files[a]; taken {
			t.Errorf("%s: ADD handed out %s, held by %+v", when, a, o)
		}
	}
	checkDisk(t, dir, when+", then ADD")
}
