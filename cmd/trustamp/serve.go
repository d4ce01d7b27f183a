package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/spf13/cobra"

	"github.com/trustamp/trustamp/api"
	"github.com/trustamp/trustamp/audit"
	"github.com/trustamp/trustamp/ca"
	"github.com/trustamp/trustamp/config"
	"github.com/trustamp/trustamp/datadir"
	"github.com/trustamp/trustamp/opamp"
	"github.com/trustamp/trustamp/server"
)

func newServeCmd(g *globals) *cobra.Command {
	var opampAddr, adminAddr string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the trustamp server (initialises the data dir on first start)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			res, err := datadir.Init(ctx, datadir.Options{Layout: g.layout()})
			if err != nil {
				return err
			}
			printInit(cmd.OutOrStdout(), cmd.ErrOrStderr(), g.layout(), res)

			d, err := datadir.Open(ctx, datadir.Options{Layout: g.layout()})
			if err != nil {
				return err
			}
			defer d.Close()
			if opampAddr != "" {
				d.Config.OpAMP.Addr = opampAddr
			}
			if adminAddr != "" {
				d.Config.Admin.Addr = adminAddr
			}
			logger, err := newLogger(d.Config.Log)
			if err != nil {
				return err
			}
			srv, err := buildServer(ctx, d, logger, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			return srv.Run(ctx)
		},
	}
	cmd.Flags().StringVar(&opampAddr, "opamp-addr", "", "OpAMP listen address (default from config, :4320)")
	cmd.Flags().StringVar(&adminAddr, "admin-addr", "", "admin API listen address (default from config, 127.0.0.1:4321)")
	return cmd
}

// buildServer wires the packages into one server. It is wiring only: every
// decision lives in the packages.
func buildServer(ctx context.Context, d *datadir.Dir, logger *slog.Logger, stderr io.Writer) (*server.Server, error) {
	key, err := d.AuditKey(ctx)
	if err != nil {
		return nil, err
	}
	auditLog := audit.New(audit.Config{Key: key, Logger: logger})
	authority, err := ca.New(ctx, ca.Config{Keys: d.Keys, Files: d.Layout.CAFiles(), TrustDomain: d.Config.TrustDomain})
	if err != nil {
		return nil, err
	}
	cert, err := authority.ServerCertificate(ctx, d.Config.OpAMP.ServerNames)
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := opamp.NewMetrics()
	if err := metrics.Register(reg); err != nil {
		return nil, err
	}
	op, err := opamp.New(opamp.Config{
		Store: d.Store, CA: authority, Audit: auditLog, ReplicaID: d.Config.OpAMP.ReplicaID,
		HeartbeatInterval:        d.Config.OpAMP.HeartbeatInterval,
		MaxConcurrentEnrollments: d.Config.OpAMP.MaxConcurrentEnrollments,
		Metrics:                  metrics, Logger: logger,
	})
	if err != nil {
		return nil, err
	}
	admin := api.New(api.Config{Store: d.Store, Audit: auditLog, Gatherer: reg, Logger: logger})
	return server.New(server.Config{
		OpAMPAddr:          d.Config.OpAMP.Addr,
		AdminAddr:          d.Config.Admin.Addr,
		Store:              d.Store,
		AuditKey:           key,
		CheckpointInterval: d.Config.Audit.CheckpointInterval,
		Logger:             logger,
		OpAMP:              op,
		TLS:                &cert,
		CAPEM:              authority.RootPEM(),
		Admin:              admin,
		OnListening: func(_, adminAddr net.Addr) {
			url := "https://" + adminURLHost(adminAddr)
			if err := d.WriteLocalCredential(ctx, auditLog, url, time.Now()); err != nil {
				logger.Error("write local CLI credential", "err", err)
				return
			}
			fmt.Fprintf(stderr, "admin API %s (local CLI credential in %s)\n", url, d.Layout.LocalCredential())
		},
	})
}

// adminURLHost turns a listen address into one a local client can dial.
func adminURLHost(a net.Addr) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

func newLogger(c config.Log) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.Level)); err != nil {
		return nil, fmt.Errorf("log.level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
}
