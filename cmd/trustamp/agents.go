package main

import (
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/trustamp/trustamp/api"
)

func newAgentsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "agents", Short: "Inspect the fleet registry"}
	cmd.AddCommand(newAgentsListCmd(g), newAgentsShowCmd(g), newAgentsReleaseCmd(g))
	return cmd
}

func newAgentsListCmd(g *globals) *cobra.Command {
	var (
		cf        clientFlags
		labels    []string
		connected string
		expiring  time.Duration
		output    string
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List agents (filters: --label, --connected, --expiring-within)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output, "table", "json"); err != nil {
				return err
			}
			q := url.Values{}
			for _, l := range labels {
				q.Add("label", l)
			}
			if connected != "" {
				q.Set("connected", connected)
			}
			if expiring > 0 {
				q.Set("expiring_within", expiring.String())
			}
			c, err := cf.client(g)
			if err != nil {
				return err
			}
			agents, err := c.Agents(cmd.Context(), q)
			if err != nil {
				return err
			}
			if output == "json" {
				return printJSON(cmd.OutOrStdout(), agents)
			}
			rows := make([][]string, 0, len(agents))
			for _, a := range agents {
				quarantined := "no"
				if a.Quarantine != nil {
					quarantined = "yes (" + a.Quarantine.Reason + ")"
				}
				rows = append(rows, []string{a.UID, yesNo(a.Connected), quarantined, a.Transport, fmtTime(a.LastSeen),
					shortSerial(a.CertSerial), fmtTime(a.CertNotAfter), fmtLabels(a.Labels)})
			}
			return printTable(cmd.OutOrStdout(), []string{"UID", "CONNECTED", "QUARANTINED", "TRANSPORT", "LAST SEEN", "CERT", "CERT EXPIRES", "LABELS"}, rows)
		},
	}
	cf.register(cmd)
	cmd.Flags().StringArrayVar(&labels, "label", nil, "only agents with label k=v (repeatable)")
	cmd.Flags().StringVar(&connected, "connected", "", "only connected (true) or disconnected (false) agents")
	cmd.Flags().DurationVar(&expiring, "expiring-within", 0, "only agents whose certificate expires within this duration")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

func newAgentsShowCmd(g *globals) *cobra.Command {
	var (
		cf     clientFlags
		output string
	)
	cmd := &cobra.Command{
		Use:   "show UID",
		Short: "Show one agent",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output, "table", "json"); err != nil {
				return err
			}
			c, err := cf.client(g)
			if err != nil {
				return err
			}
			a, err := c.Agent(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if output == "json" {
				return printJSON(cmd.OutOrStdout(), a)
			}
			return printTable(cmd.OutOrStdout(), []string{"FIELD", "VALUE"}, agentRows(a))
		},
	}
	cf.register(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

func agentRows(a api.Agent) [][]string {
	rows := [][]string{
		{"uid", a.UID}, {"labels", fmtLabels(a.Labels)}, {"connected", yesNo(a.Connected)},
		{"transport", a.Transport}, {"remote addr", a.RemoteAddr}, {"replica", a.Replica},
		{"connected since", fmtTime(a.ConnectedSince)}, {"last seen", fmtTime(a.LastSeen)},
		{"sequence num", strconv.FormatUint(a.SequenceNum, 10)}, {"capabilities", "0x" + strconv.FormatUint(a.Capabilities, 16)},
		{"certificate", a.CertSerial}, {"cert expires", fmtTime(a.CertNotAfter)},
		{"enrolled", fmtTime(a.EnrolledAt)}, {"enrollment token", a.EnrollmentToken},
		{"effective config", a.EffectiveConfigHash}, {"description", string(a.Description)}, {"health", string(a.Health)},
		{"quarantined", quarantineState(a.Quarantine)},
	}
	for _, p := range a.Packages {
		state := p.State
		if p.Message != "" {
			state += ": " + p.Message
		}
		down := ""
		if p.Downgrade {
			down = ", downgrade"
		}
		rows = append(rows, []string{"package " + p.Type, fmt.Sprintf("%s %s%s (rule: %s)", p.Version, state, down, p.Rule)})
	}
	return rows
}

func quarantineState(q *api.Quarantine) string {
	if q == nil {
		return "no"
	}
	return fmt.Sprintf("since %s (%s by %s)", q.Since.UTC().Format(time.RFC3339), q.Reason, q.Actor)
}

func newAgentsReleaseCmd(g *globals) *cobra.Command {
	var (
		cf   clientFlags
		note string
	)
	cmd := &cobra.Command{
		Use:   "release UID",
		Short: "Lift an agent's quarantine (role security; audited)",
		Long: `release lifts the quarantine a revocation put on an agent identity, so it may
enroll again with a fresh enrollment token. Its revoked certificates stay
revoked. Only an admin token with role security may do this, and --note is
required: it is recorded in the audit log.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client(g)
			if err != nil {
				return err
			}
			if err := c.Release(cmd.Context(), args[0], note); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "released %s: it may enroll again with a new enrollment token\n", args[0])
			return nil
		},
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&note, "note", "", "why the quarantine is lifted (required, audited)")
	cmd.MarkFlagRequired("note")
	return cmd
}

func fmtTime(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func fmtLabels(m map[string]string) string {
	parts := make([]string, 0, len(m))
	for k, v := range m {
		parts = append(parts, k+"="+v)
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

func shortSerial(s string) string {
	if len(s) > 12 {
		return s[:12] + "…"
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
