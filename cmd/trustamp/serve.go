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
	var (
		opampAddr, adminAddr, policiesDir string
		reinitialise                      bool
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the trustamp server (initialises the data dir on first start)",
		Long: `serve runs the server. On first start it initialises the data dir (CA,
keys, database, admin token) and records, next to the keys (in Vault under
vault-kv custody), the state anchor: which database this data dir uses and
its latest signed audit checkpoint, updated at every checkpoint.

serve refuses to start on a state database that does not match the anchor:
missing, empty, another data dir's, or rolled back to before the anchored
checkpoint. Serving it would restart the CRL and audit log and forget every
revocation. Restore the database from a backup, or accept it deliberately
with --reinitialise-state: the database is kept as it is (initialised if
empty), the anchor it replaces is recorded as an audit entry
(state.reinitialise, the first entry of an empty database's new log), and
the anchor is rewritten. The flag is refused when the database matches.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			res, err := datadir.Init(ctx, datadir.Options{Layout: g.layout(), ReinitialiseState: reinitialise})
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
	cmd.Flags().BoolVar(&reinitialise, "reinitialise-state", false, "accept a state database that does not match the data dir's anchor (empty or rolled back), audit it and re-anchor")
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
