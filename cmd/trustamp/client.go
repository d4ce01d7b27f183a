package main

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/trustamp/trustamp/api"
	"github.com/trustamp/trustamp/datadir"
)

// clientFlags locate the admin API: flags, then TRUSTAMP_* environment, then
// the local server's credential in the data dir.
type clientFlags struct {
	server, token, caFile string
}

func (f *clientFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.server, "server", "", "admin API URL (env TRUSTAMP_SERVER; default: the local server of --data)")
	cmd.Flags().StringVar(&f.token, "token", "", "admin token (env TRUSTAMP_TOKEN; default: the local server's)")
	cmd.Flags().StringVar(&f.caFile, "ca", "", "CA bundle to verify the server (env TRUSTAMP_CA; default: the data dir's root)")
}

func (f *clientFlags) client(g *globals) (*api.Client, error) {
	cfg := api.ClientConfig{Server: first(f.server, os.Getenv("TRUSTAMP_SERVER")), Token: first(f.token, os.Getenv("TRUSTAMP_TOKEN"))}
	caFile := first(f.caFile, os.Getenv("TRUSTAMP_CA"))
	if cfg.Server == "" || cfg.Token == "" {
		local, err := datadir.ReadLocalCredential(g.layout())
		if err != nil {
			return nil, err
		}
		cfg.Server, cfg.Token = first(cfg.Server, local.Server), first(cfg.Token, local.Token)
		caFile = first(caFile, local.CAFile)
	}
	if caFile != "" {
		b, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		cfg.CAPEM = b
	}
	return api.NewClient(cfg)
}

func first(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}
