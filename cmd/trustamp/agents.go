package main

import (
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
	cmd.AddCommand(newAgentsListCmd(g), newAgentsShowCmd(g))
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
				rows = append(rows, []string{a.UID, yesNo(a.Connected), a.Transport, fmtTime(a.LastSeen), shortSerial(a.CertSerial), fmtTime(a.CertNotAfter), fmtLabels(a.Labels)})
			}
			return printTable(cmd.OutOrStdout(), []string{"UID", "CONNECTED", "TRANSPORT", "LAST SEEN", "CERT", "CERT EXPIRES", "LABELS"}, rows)
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
	return [][]string{
		{"uid", a.UID}, {"labels", fmtLabels(a.Labels)}, {"connected", yesNo(a.Connected)},
		{"transport", a.Transport}, {"remote addr", a.RemoteAddr}, {"replica", a.Replica},
		{"connected since", fmtTime(a.ConnectedSince)}, {"last seen", fmtTime(a.LastSeen)},
		{"sequence num", strconv.FormatUint(a.SequenceNum, 10)}, {"capabilities", "0x" + strconv.FormatUint(a.Capabilities, 16)},
		{"certificate", a.CertSerial}, {"cert expires", fmtTime(a.CertNotAfter)},
		{"enrolled", fmtTime(a.EnrolledAt)}, {"enrollment token", a.EnrollmentToken},
		{"effective config", a.EffectiveConfigHash}, {"description", string(a.Description)}, {"health", string(a.Health)},
	}
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
