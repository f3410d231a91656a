// Command linen is linen's operator tool: it attaches pods to the node's
// network the way a container runtime does (linen pod ...), reports the
// network's status and installs the CNI plugins.
//
// Every subcommand is a thin layer over an internal package: it parses
// flags and prints; the work is done in internal/runtime.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// cli carries the output streams of one invocation.
type cli struct {
	stdout, stderr io.Writer
}

// command is a subcommand of linen (or of linen pod).
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, c *cli, args []string) error
}

func topCommands() []command {
	return []command{
		{"pod", "attach, detach, check, list and garbage-collect pods", runPod},
		{"status", "report whether the default network is ready", runStatus},
		{"install", "install the linen-cni plugins into the CNI bin directory", runInstall},
		{"daemon", "run the node's overlay agent (flanneld's role)", runDaemon},
		{"cluster", "build and inspect a simulated multi-host cluster", runCluster},
		{"demo", "show pods on simulated hosts reaching each other", runDemo},
		{"leases", "list or delete the subnet leases in etcd", runLeases},
		{"bench", "measure linen against the reference plugins", runBench},
		{"version", "print the version", runVersion},
	}
}

// usageError is a mistake in the command line: exit status 2. Its message
// begins with the command ("linen pod add: ...").
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

// run executes one command line and returns the exit status: 0, 1 for a
// failure, 2 for a usage mistake.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := &cli{stdout: stdout, stderr: stderr}
	err := dispatch(ctx, c, "linen", topCommands(), args)
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, new(*usageError)):
		fmt.Fprintln(stderr, err) // names the command already
		return 2
	default:
		fmt.Fprintf(stderr, "linen: %v\n", err)
		return 1
	}
}

// dispatch runs the command named by args[0] from cmds.
func dispatch(ctx context.Context, c *cli, prog string, cmds []command, args []string) error {
	if len(args) == 0 {
		printCommands(c.stderr, prog, cmds)
		return usagef("%s: missing command", prog)
	}
	name := args[0]
	if name == "help" || name == "-h" || name == "--help" || name == "-help" {
		if len(args) > 1 {
			// "linen help pod" = "linen pod -h"
			return dispatch(ctx, c, prog, cmds, []string{args[1], "-h"})
		}
		printCommands(c.stdout, prog, cmds)
		return nil
	}
	for _, cmd := range cmds {
		if cmd.name == name {
			return cmd.run(ctx, c, args[1:])
		}
	}
	printCommands(c.stderr, prog, cmds)
	return usagef("%s: unknown command %q", prog, name)
}

func printCommands(w io.Writer, prog string, cmds []command) {
	fmt.Fprintf(w, "Usage: %s COMMAND [ARGS]\n\nCommands:\n", prog)
	for _, cmd := range cmds {
		fmt.Fprintf(w, "  %-10s %s\n", cmd.name, cmd.summary)
	}
	fmt.Fprintf(w, "\nRun \"%s COMMAND -h\" for the flags of a command.\n", prog)
}

// flagSet is a flag set with the help text of its command.
type flagSet struct {
	*flag.FlagSet
	help func()
}

// newFlagSet returns a flag set for the command name (like "linen pod
// add"); -h prints the synopsis "name args", the description and the
// flags to stdout. A flag mistake prints only the error.
func newFlagSet(c *cli, name, args, description string) *flagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	help := func() {
		fmt.Fprintf(c.stdout, "Usage: %s %s\n\n%s\n", name, args, strings.TrimSpace(description))
		if hasFlags(fs) {
			fmt.Fprintf(c.stdout, "\nFlags:\n")
			fs.SetOutput(c.stdout)
			fs.PrintDefaults()
			fs.SetOutput(io.Discard)
		}
	}
	return &flagSet{FlagSet: fs, help: help}
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

// parseArgs parses flags that may come before, between or after the
// positional arguments ("linen pod add web --port 8080:80"); "--" ends
// the flags. It returns the positional arguments.
func parseArgs(fs *flagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fs.help()
				return nil, err
			}
			return nil, usagef("%s: %v (see -h)", fs.Name(), err)
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// listFlag is a flag that may be repeated; each value is checked by parse.
type listFlag[T any] struct {
	vals  *[]T
	parse func(string) (T, error)
}

func (l listFlag[T]) String() string {
	if l.vals == nil {
		return ""
	}
	parts := make([]string, 0, len(*l.vals))
	for _, v := range *l.vals {
		parts = append(parts, fmt.Sprint(v))
	}
	return strings.Join(parts, " ")
}

func (l listFlag[T]) Set(s string) error {
	v, err := l.parse(s)
	if err != nil {
		return err
	}
	*l.vals = append(*l.vals, v)
	return nil
}
