package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/trustamp/trustamp/api"
)

func newCACmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "ca", Short: "Manage trustamp's certificate authority"}
	var (
		cf     clientFlags
		output string
	)
	rotate := &cobra.Command{
		Use:   "rotate-intermediate",
		Short: "Replace the issuing intermediate CA under the same root",
		Long: `rotate-intermediate makes a new intermediate CA under the root and issues
every new certificate from it at once. Certificates issued by the previous
intermediate keep verifying (the root is unchanged, and the previous
intermediate stays trusted until it expires), so no agent loses connectivity.
The operation is audited and resumable: running it again after an
interruption finishes the same rollover.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output, "table", "json"); err != nil {
				return err
			}
			c, err := cf.client(g)
			if err != nil {
				return err
			}
			res, err := c.RotateIntermediate(cmd.Context())
			if err != nil {
				return err
			}
			if err := printRollover(cmd, output, "INTERMEDIATE", res); err != nil || output == "json" {
				return err
			}
			fmt.Fprintln(cmd.ErrOrStderr(), "new certificates now chain to the current intermediate; existing ones stay valid")
			return nil
		},
	}
	cf.register(rotate)
	rotate.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	cmd.AddCommand(rotate, newRotateRootCmd(g))
	return cmd
}

func newRotateRootCmd(g *globals) *cobra.Command {
	var (
		cf     clientFlags
		finish bool
		output string
	)
	cmd := &cobra.Command{
		Use:   "rotate-root",
		Short: "Replace the root CA (then, with --finish, end the overlap)",
		Long: `rotate-root makes a new root and a new intermediate under it. During the
overlap every offer's ca_cert and /v1/ca.pem carry both roots, and new
certificates come with the new intermediate cross-signed by the previous root,
so agents that trust only the previous root keep verifying while they learn
the new one. Once every agent has the new root (at least one certificate
lifetime later), run it again with --finish to stop trusting the previous
root. Audited and resumable.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output, "table", "json"); err != nil {
				return err
			}
			c, err := cf.client(g)
			if err != nil {
				return err
			}
			res, err := c.RotateRoot(cmd.Context(), finish)
			if err != nil {
				return err
			}
			if finish {
				fmt.Fprintln(cmd.ErrOrStderr(), "root rollover finished: the previous root is no longer trusted or sent")
				return nil
			}
			if err := printRollover(cmd, output, "ROOT", res); err != nil || output == "json" {
				return err
			}
			fmt.Fprintln(cmd.ErrOrStderr(), "overlap started: agents are sent both roots; run with --finish once they all trust the new one")
			return nil
		},
	}
	cf.register(cmd)
	cmd.Flags().BoolVar(&finish, "finish", false, "end the overlap: stop trusting and sending the previous root")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

// printRollover shows a CA rollover's previous and current certificate.
func printRollover(cmd *cobra.Command, output, kind string, res api.IntermediateRollover) error {
	if output == "json" {
		return printJSON(cmd.OutOrStdout(), res)
	}
	row := func(name string, c api.CACert) []string {
		return []string{name, c.Serial, c.NotAfter.UTC().Format(time.RFC3339), c.FingerprintSHA256}
	}
	return printTable(cmd.OutOrStdout(), []string{kind, "SERIAL", "EXPIRES", "SHA-256"},
		[][]string{row("previous", res.Previous), row("current", res.Current)})
}
