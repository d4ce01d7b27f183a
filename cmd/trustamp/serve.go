package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/trustamp/trustamp/config"
	"github.com/trustamp/trustamp/datadir"
	"github.com/trustamp/trustamp/server"
)

func newServeCmd(g *globals) *cobra.Command {
	var opampAddr, adminAddr, policiesDir string
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
			if policiesDir != "" {
				// A flag's relative path is relative to where it was typed.
				if d.Config.Policies.Dir, err = filepath.Abs(policiesDir); err != nil {
					return err
				}
			}
			logger, err := newLogger(d.Config.Log)
			if err != nil {
				return err
			}
			srv, err := server.Assemble(ctx, d, server.AssembleOptions{Logger: logger, Notices: cmd.ErrOrStderr()})
			if err != nil {
				return err
			}
			return srv.Run(ctx)
		},
	}
	cmd.Flags().StringVar(&opampAddr, "opamp-addr", "", "OpAMP listen address (default from config, :4320)")
	cmd.Flags().StringVar(&adminAddr, "admin-addr", "", "admin API listen address (default from config, 127.0.0.1:4321)")
	cmd.Flags().StringVar(&policiesDir, "policies", "", "directory of CEL policy files (default from config, DATA/policies)")
	return cmd
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
