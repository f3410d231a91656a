package dhcp

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultStateDir is where the daemon keeps its leases by default: under
// /run, since the namespaces the leases belong to do not survive a reboot
// either.
const DefaultStateDir = "/run/cni/dhcp-leases"

// DaemonMain runs "linen-cni dhcp daemon [flags]" and returns the exit
// status. It stops on SIGTERM or SIGINT, keeping its leases in the state
// directory for the next start.
func DaemonMain(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("dhcp daemon", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socketpath", DefaultSocketPath, "unix socket the plugin connects to (-hostprefix is put in front)")
	pidfile := fs.String("pidfile", "", "write the daemon's process ID to this file")
	hostprefix := fs.String("hostprefix", "", "prefix of the host's root filesystem (put in front of namespace paths, the socket and the state directory), for a daemon in a container")
	statedir := fs.String("statedir", DefaultStateDir, "directory of the lease files that let a restarted daemon keep renewing; empty keeps leases in memory only")
	broadcast := fs.Bool("broadcast", false, "ask servers to broadcast their replies (the BOOTP broadcast flag)")
	timeout := fs.Duration("timeout", 10*time.Second, "how long an allocation waits for a lease")
	resendmax := fs.Duration("resendmax", 62*time.Second, "longest interval between retransmissions")
	level := fs.String("log", "info", "log level: debug, info, warn, error")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: linen-cni dhcp daemon [flags]\n\nKeeps the DHCP leases of the dhcp IPAM plugin alive.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "dhcp daemon: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintf(stderr, "dhcp daemon: -log: %v\n", err)
		return 2
	}
	if *timeout <= 0 || *resendmax <= 0 {
		fmt.Fprintln(stderr, "dhcp daemon: -timeout and -resendmax must be positive")
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lv}))
	sd := *statedir
	if sd != "" {
		sd = *hostprefix + sd
	}
	d, err := NewDaemon(DaemonConfig{HostPrefix: *hostprefix, StateDir: sd, Broadcast: *broadcast,
		Timeout: *timeout, ResendMax: *resendmax, Log: log})
	if err != nil {
		log.Error("start", "err", err)
		return 1
	}
	defer d.Close()
	ln, activated, err := listener(*hostprefix + *socket)
	if err != nil {
		log.Error("start", "err", err)
		return 1
	}
	if *pidfile != "" {
		if err := os.WriteFile(*pidfile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			log.Error("write pid file", "err", err)
			ln.Close()
			return 1
		}
		defer os.Remove(*pidfile)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sig)
	served := make(chan error, 1)
	go func() { served <- d.Serve(ln) }()
	log.Info("dhcp daemon listening", "socket", ln.Addr().String(), "socket-activated", activated, "statedir", sd, "leases", len(d.Leases()))
	select {
	case s := <-sig:
		log.Info("stopping; leases are kept", "signal", s.String())
		d.Close()
		<-served
		return 0
	case err := <-served:
		if err != nil {
			log.Error("serve", "err", err)
			return 1
		}
		return 0
	}
}

// listener takes a socket passed by systemd socket activation
// (LISTEN_PID/LISTEN_FDS, first descriptor 3) or creates one at path.
func listener(path string) (net.Listener, bool, error) {
	if pid, _ := strconv.Atoi(os.Getenv("LISTEN_PID")); pid == os.Getpid() {
		if n, _ := strconv.Atoi(os.Getenv("LISTEN_FDS")); n >= 1 {
			unix.CloseOnExec(3)
			f := os.NewFile(3, "listen-fd-3")
			ln, err := net.FileListener(f)
			f.Close()
			if err != nil {
				return nil, false, fmt.Errorf("socket from systemd (LISTEN_FDS): %w", err)
			}
			for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
				os.Unsetenv(k)
			}
			return ln, true, nil
		}
	}
	ln, err := Listen(path)
	return ln, false, err
}

// IsDaemonCommand reports whether args (after the program name, for a
// binary installed as "dhcp", or after "dhcp" for linen-cni) ask for the
// daemon.
func IsDaemonCommand(args []string) bool {
	return len(args) > 0 && args[0] == "daemon"
}
