// Command linen-etcd runs a single-node etcd (embedded) for linen: the
// store `linen daemon` starts as a child process when it is given no
// --etcd-endpoints, and the simulator's cluster store. It is a binary of
// its own so that the daemon does not link the etcd server (which would
// cost the daemon about a third of its memory).
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"linen.dev/linen/internal/overlay/subnet/etcdstore"
	"linen.dev/linen/internal/overlay/subnet/etcdstore/embedded"
)

func main() {
	fs := flag.NewFlagSet("linen-etcd", flag.ExitOnError)
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "Usage: linen-etcd [flags]\n\nRun a single-node etcd for linen until SIGTERM.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	dataDir := fs.String("data-dir", "/var/lib/linen/etcd", "data `directory`")
	client := fs.String("listen-client-urls", "http://127.0.0.1:2379", "client `URL`")
	peer := fs.String("listen-peer-urls", "", "peer `URL` (default: client port + 1)")
	prefix := fs.String("prefix", etcdstore.DefaultPrefix, "key `prefix` of the network configuration")
	initConf := fs.String("init-config", "", "net-conf.json `text` (or @file) stored at <prefix>/config when absent")
	_ = fs.Parse(os.Args[1:])
	if fs.NArg() != 0 {
		fs.Usage()
		os.Exit(2)
	}
	conf := []byte(*initConf)
	if strings.HasPrefix(*initConf, "@") {
		var err error
		if conf, err = os.ReadFile((*initConf)[1:]); err != nil {
			fmt.Fprintln(os.Stderr, "linen-etcd:", err)
			os.Exit(1)
		}
	}
	if len(conf) == 0 {
		conf = nil
	}
	if *peer == "" {
		*peer = etcdstore.PeerURLFor(*client)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	srv, err := embedded.StartEmbedded(ctx, embedded.EmbeddedOptions{DataDir: *dataDir, ClientURL: *client, PeerURL: *peer,
		Prefix: *prefix, InitConfig: conf, Log: log})
	if err != nil {
		fmt.Fprintln(os.Stderr, "linen-etcd:", err)
		os.Exit(1)
	}
	log.Info("etcd serving", "endpoints", srv.Endpoints())
	select {
	case <-ctx.Done():
	case err := <-srv.Err():
		log.Error("etcd failed", "err", err)
	}
	srv.Stop()
}
