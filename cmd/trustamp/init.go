package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/trustamp/trustamp/datadir"
)

func newInitCmd(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Initialise a data dir (idempotent: creates only what is missing)",
		Long: `init creates the data dir (0700), the age identity that encrypts every
private key at rest, a config file with every key documented, the database
schema, the audit signing key and the first admin token.

The admin token is printed once, on stdout, and stored only as a hash: keep it.
Running init again creates nothing that exists and prints no token.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output, "table", "json"); err != nil {
				return err
			}
			res, err := datadir.Init(cmd.Context(), datadir.Options{Layout: g.layout()})
			if err != nil {
				return err
			}
			if output == "json" {
				return printJSON(cmd.OutOrStdout(), res)
			}
			printInit(cmd.OutOrStdout(), cmd.ErrOrStderr(), g.layout(), res)
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

// printInit tells a person what init did. The token goes to stdout alone on
// its line, so `trustamp init | tail -1` style scripts can capture it; the
// explanation goes to stderr.
func printInit(stdout, stderr io.Writer, l datadir.Layout, res *datadir.InitResult) {
	if len(res.Created) == 0 {
		fmt.Fprintf(stderr, "data dir %s is already initialised; nothing created\n", res.Root)
		return
	}
	fmt.Fprintf(stderr, "initialised data dir %s\n", res.Root)
	for _, c := range res.Created {
		fmt.Fprintf(stderr, "  created %s\n", c)
	}
	fmt.Fprintf(stderr, "  config:         %s\n", l.Config())
	fmt.Fprintf(stderr, "  state:          %s\n", res.StateDriver)
	fmt.Fprintf(stderr, "  audit key:      %s (public key %s)\n", res.AuditKeyID, l.AuditPublicKey())
	if res.AdminToken != "" {
		fmt.Fprintf(stderr, "admin token %s (role admin), shown once and stored only as a hash:\n", res.AdminTokenID)
		fmt.Fprintln(stdout, res.AdminToken)
	}
}
