package main

import (
	"context"
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

// listing describes a read-only command that fetches rows from the admin
// API and prints them as a table, or as JSON with -o json.
type listing[T any] struct {
	Use, Short string
	Header     []string
	// Fetch is a method expression of the client, e.g. (*api.Client).Pins.
	Fetch func(*api.Client, context.Context) ([]T, error)
	// Row is one table row of an item, in Header's order.
	Row func(T) []string
}

// newListCmd builds the command for l: every listing takes the same client
// flags and -o table|json, and prints the same way.
func newListCmd[T any](g *globals, l listing[T]) *cobra.Command {
	var (
		cf     clientFlags
		output string
	)
	cmd := &cobra.Command{
		Use:   l.Use,
		Short: l.Short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output, "table", "json"); err != nil {
				return err
			}
			c, err := cf.client(g)
			if err != nil {
				return err
			}
			items, err := l.Fetch(c, cmd.Context())
			if err != nil {
				return err
			}
			if output == "json" {
				return printJSON(cmd.OutOrStdout(), items)
			}
			rows := make([][]string, 0, len(items))
			for _, it := range items {
				rows = append(rows, l.Row(it))
			}
			return printTable(cmd.OutOrStdout(), l.Header, rows)
		},
	}
	cf.register(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}
