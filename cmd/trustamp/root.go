package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/trustamp/trustamp/datadir"
)

// globals are the flags every command shares.
type globals struct {
	dataDir    string
	configFile string
}

func (g *globals) layout() datadir.Layout {
	return datadir.Layout{Root: g.dataDir, ConfigFile: g.configFile}
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "trustamp",
		Short:         "OpAMP server for trust operations on telemetry agent fleets",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().StringVar(&g.dataDir, "data", datadir.DefaultPath, "data directory")
	root.PersistentFlags().StringVar(&g.configFile, "config", "", "config file (default DATA/trustamp.yaml)")
	root.AddCommand(
		newVersionCmd(),
		newInitCmd(g),
		newServeCmd(g),
		newAuditCmd(g),
		newTokenCmd(g),
		newAdminTokenCmd(g),
		newAgentsCmd(g),
		newLoadgenCmd(g),
		newRotateCmd(g),
		newCertsCmd(g),
		newCACmd(g),
		newRevokeCmd(g),
		newReportCmd(g),
		newSignCmd(),
		newVerifyCmd(),
		newKeysCmd(g),
		newPublishersCmd(g),
		newPackagesCmd(g),
		newPolicyCmd(g),
		newAgentCmd(),
	)
	return root
}

// printJSON writes v as indented JSON, the `-o json` form for scripts.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printTable writes rows as aligned columns, the form for people.
func printTable(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, r := range append([][]string{header}, rows...) {
		for i, c := range r {
			if i > 0 {
				fmt.Fprint(tw, "\t")
			}
			fmt.Fprint(tw, c)
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

// checkOutput validates an -o value.
func checkOutput(o string, allowed ...string) error {
	for _, a := range allowed {
		if o == a {
			return nil
		}
	}
	return fmt.Errorf("-o %q: want one of %v", o, allowed)
}
