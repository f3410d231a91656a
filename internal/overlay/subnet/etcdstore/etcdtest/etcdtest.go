package etcdtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"linen.dev/linen/internal/overlay/subnet"
	"linen.dev/linen/internal/overlay/subnet/etcdstore"
	"linen.dev/linen/internal/overlay/subnet/etcdstore/embedded"
	"linen.dev/linen/internal/overlay/subnet/storetest"
)

// Server is an etcd for one test: embedded (Start) or a child process
// running an etcd binary (StartProcess).
type Server struct {
	emb                *embedded.Embedded
	bin                string // etcd binary, for a process server
	proc               *exec.Cmd
	procDone           chan struct{}
	dataDir            string
	clientURL, peerURL string
	admin              *clientv3.Client
}

// freePort binds 127.0.0.1:0 and releases the port (another process may
// take it before etcd binds it: Start retries).
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func (s *Server) start(t testing.TB) error {
	if s.bin != "" {
		return s.startProcess(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	emb, err := embedded.StartEmbedded(ctx, embedded.EmbeddedOptions{
		DataDir: s.dataDir, ClientURL: s.clientURL, PeerURL: s.peerURL,
		TickMs: 10, ElectionMs: 100, CompactionRetention: "0",
		Log: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		return err
	}
	s.emb = emb
	return nil
}

// Start starts an embedded server; it is stopped when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	return launch(t, &Server{dataDir: t.TempDir() + "/etcd"})
}

// StartProcess runs the etcd server binary bin as a child process (its
// own data directory, loopback ports); it is stopped when the test ends.
func StartProcess(t testing.TB, bin string) *Server {
	t.Helper()
	return launch(t, &Server{bin: bin, dataDir: t.TempDir() + "/etcd"})
}

func launch(t testing.TB, s *Server) *Server {
	t.Helper()
	var err error
	for try := 0; try < 5; try++ {
		s.clientURL = fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
		s.peerURL = fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
		if err = s.start(t); err == nil || !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	if err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	t.Cleanup(func() {
		if s.admin != nil {
			s.admin.Close()
		}
		s.Stop()
	})
	return s
}

func (s *Server) startProcess(t testing.TB) error {
	cmd := exec.Command(s.bin, "--name", "default", "--data-dir", s.dataDir,
		"--listen-client-urls", s.clientURL, "--advertise-client-urls", s.clientURL,
		"--listen-peer-urls", s.peerURL, "--initial-advertise-peer-urls", s.peerURL,
		"--initial-cluster", "default="+s.peerURL, "--heartbeat-interval", "10", "--election-timeout", "100")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{s.clientURL}, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		_ = cmd.Process.Kill()
		<-done
		return err
	}
	defer c.Close()
	deadline := time.Now().Add(30 * time.Second)
	hostPort := strings.TrimPrefix(s.clientURL, "http://")
	for {
		// Wait for the port first: a refused gRPC dial backs off for 1 s.
		err := errors.New("port closed")
		if conn, derr := net.DialTimeout("tcp", hostPort, time.Second); derr == nil {
			conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err = c.Get(ctx, "/")
			cancel()
		}
		if err == nil {
			break
		}
		select {
		case <-done:
			return fmt.Errorf("%s exited: %s", s.bin, out.String())
		default:
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-done
			return fmt.Errorf("%s not ready within 30s: %v", s.bin, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.proc, s.procDone = cmd, done
	return nil
}

// Endpoints are the client URLs.
func (s *Server) Endpoints() []string { return []string{s.clientURL} }

// Stop stops the server (Start's cleanup tolerates it). A process gets
// SIGTERM, and SIGKILL after 10 s.
func (s *Server) Stop() {
	if s.emb != nil {
		s.emb.Stop()
	}
	if s.proc != nil {
		_ = s.proc.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.procDone:
		case <-time.After(10 * time.Second):
			_ = s.proc.Process.Kill()
			<-s.procDone
		}
		s.proc = nil
	}
}

// Restart stops the server and starts it again on the same data directory
// and ports.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	var err error
	for try := 0; try < 50; try++ { // the ports may linger for a moment
		if err = s.start(t); err == nil || !strings.Contains(err.Error(), "address already in use") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("restart etcd: %v", err)
	}
}

// Store opens a Store under prefix, closed at test cleanup.
func (s *Server) Store(t testing.TB, prefix string) *etcdstore.Store {
	t.Helper()
	st, err := etcdstore.New(etcdstore.Options{Endpoints: s.Endpoints(), Prefix: prefix, RequestTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// Client is an etcd client for direct writes (closed at cleanup).
func (s *Server) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	if s.admin == nil {
		c, err := clientv3.New(clientv3.Config{Endpoints: s.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		s.admin = c
	}
	return s.admin
}

// Compact compacts the history up to the current revision.
func (s *Server) Compact(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := s.Client(t)
	r, err := c.Get(ctx, "/")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Compact(ctx, r.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
}

// PutRaw writes value at prefix/subnets/key without TTL.
func (s *Server) PutRaw(t testing.TB, prefix, key, value string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.Client(t).Put(ctx, prefix+"/subnets/"+key, value); err != nil {
		t.Fatal(err)
	}
}

// Harness is the conformance-suite harness over a fresh embedded server.
func Harness(t *testing.T) *storetest.Harness {
	return s2h(Start(t))
}

// ProcessHarness is the conformance-suite harness over a fresh etcd
// process running bin.
func ProcessHarness(bin string) func(t *testing.T) *storetest.Harness {
	return func(t *testing.T) *storetest.Harness { return s2h(StartProcess(t, bin)) }
}

func s2h(s *Server) *storetest.Harness {
	return &storetest.Harness{
		Open:    func(t *testing.T, prefix string) subnet.Store { return s.Store(t, prefix) },
		Restart: func(t *testing.T) { s.Restart(t) },
		Compact: func(t *testing.T) { s.Compact(t) },
		PutRaw:  func(t *testing.T, prefix, key, value string) { s.PutRaw(t, prefix, key, value) },
		TTL:     time.Second,
	}
}

// testWriter sends log lines to t.Log (until the test ends).
type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	defer func() { _ = recover() }() // logging after the test ended
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}
