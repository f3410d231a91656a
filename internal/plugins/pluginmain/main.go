package pluginmain

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// ArgsFromEnv reads the protocol parameters from an environment lookup.
func ArgsFromEnv(getenv func(string) string) *Args {
	return &Args{
		Command:       getenv("CNI_COMMAND"),
		ContainerID:   getenv("CNI_CONTAINERID"),
		Netns:         getenv("CNI_NETNS"),
		IfName:        getenv("CNI_IFNAME"),
		Args:          getenv("CNI_ARGS"),
		Path:          getenv("CNI_PATH"),
		NetnsOverride: getenv("CNI_NETNS_OVERRIDE"),
	}
}

// NewEnv is the environment of a plugin process: logs go to stderr at the
// level named by LINEN_LOG (debug, info, warn, error; default warn).
func NewEnv(reg *Registry, stderr io.Writer) *Env {
	level := slog.LevelWarn
	switch strings.ToLower(os.Getenv("LINEN_LOG")) {
	case "debug":
		level = slog.LevelDebug
	case "info":
		level = slog.LevelInfo
	case "error":
		level = slog.LevelError
	}
	return &Env{
		Stderr:   stderr,
		Log:      slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})),
		Registry: reg,
	}
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// Main runs plugin p as a process: parameters from the environment, the
// configuration from stdin, the result or error object on stdout. It returns
// the exit status.
func Main(p *Plugin, reg *Registry, stdin io.Reader, stdout, stderr io.Writer) int {
	a := ArgsFromEnv(os.Getenv)
	if a.Command == "" && isTerminal(os.Stdin) {
		// A person ran the binary: say what it is. A runtime that forgot
		// CNI_COMMAND gets the error object below.
		about := p.About
		if about == "" {
			about = "linen " + p.Name + " CNI plugin"
		}
		fmt.Fprintln(stderr, about)
		fmt.Fprintf(stderr, "CNI protocol versions supported: %s\n", strings.Join(p.SupportedVersions(), ", "))
		return 0
	}
	if a.Command != "VERSION" {
		data, err := io.ReadAll(stdin)
		if err != nil {
			stdout.Write(ErrorJSON(Errorf(CodeIOFailure, "stdin: read network configuration: %v", err), ""))
			return 1
		}
		a.StdinData = data
	}
	env := NewEnv(reg, stderr)
	env.Detach = os.Getenv("LINEN_SYNC_DEL") == ""
	out, cv, cerr := Invoke(context.Background(), env, p, a)
	if cerr != nil {
		stdout.Write(ErrorJSON(cerr, cv))
		return 1
	}
	if len(out) > 0 {
		stdout.Write(out)
	}
	return 0
}
