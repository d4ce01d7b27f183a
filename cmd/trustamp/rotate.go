package main

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/trustamp/trustamp/api"
)

func newRotateCmd(g *globals) *cobra.Command {
	var (
		cf       clientFlags
		labels   []string
		selector string
		all      bool
		rate     float64
		dest     string
		noWait   bool
		timeout  time.Duration
		output   string
	)
	cmd := &cobra.Command{
		Use:   "rotate [UID...]",
		Short: "Rotate agents' certificates now (by uid, --label or --all)",
		Long: `rotate asks the server to replace the OpAMP client certificate of the chosen
agents. Agents that declare the io.trustamp.csr capability are asked for a
fresh CSR; otherwise, where the profile allows server-made keys, the server
makes the key pair; otherwise the agent is listed as awaiting-agent-renewal.
An old certificate stays valid until its successor is confirmed (and then
until it expires), so a failed rotation never strands an agent.

It shows progress (offered / confirmed / stalled) until nothing is pending,
unless --no-wait.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output, "table", "json"); err != nil {
				return err
			}
			req := api.RotationRequest{UIDs: args, All: all, Rate: rate, Destination: dest}
			var err error
			if req.Labels, err = labelSelector(labels, selector); err != nil {
				return err
			}
			c, err := cf.client(g)
			if err != nil {
				return err
			}
			st, err := c.Rotate(cmd.Context(), req)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "rotation %s: %d agents (%s)", st.ID, st.Total, st.Selector)
			if len(st.Skipped) > 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), ", %d skipped (already rotating)", len(st.Skipped))
			}
			fmt.Fprintln(cmd.ErrOrStderr())
			deadline := time.Now().Add(timeout)
			for !noWait && !st.Done && time.Now().Before(deadline) {
				select {
				case <-cmd.Context().Done():
					return cmd.Context().Err()
				case <-time.After(time.Second):
				}
				if st, err = c.Rotation(cmd.Context(), st.ID); err != nil {
					return err
				}
				fmt.Fprintln(cmd.ErrOrStderr(), progressLine(st))
			}
			if output == "json" {
				return printJSON(cmd.OutOrStdout(), st)
			}
			rows := make([][]string, 0, len(st.Rotations))
			for _, r := range st.Rotations {
				rows = append(rows, []string{r.UID, r.State, r.Method, shortSerial(r.Serial), fmt.Sprint(r.Attempts), r.Error})
			}
			if err := printTable(cmd.OutOrStdout(), []string{"UID", "STATE", "METHOD", "NEW CERT", "ATTEMPTS", "ERROR"}, rows); err != nil {
				return err
			}
			if !noWait && !st.Done {
				return fmt.Errorf("rotation %s not done after %s: %s", st.ID, timeout, progressLine(st))
			}
			if n := st.States["stalled"] + st.States["awaiting-agent-renewal"]; n > 0 && !noWait {
				return fmt.Errorf("%d of %d rotations need attention (stalled or awaiting agent renewal)", n, st.Total)
			}
			return nil
		},
	}
	cf.register(cmd)
	cmd.Flags().StringArrayVar(&labels, "label", nil, "rotate agents with label k=v (repeatable; all must match)")
	cmd.Flags().StringVar(&selector, "selector", "", `label selector: 'labels.env == "prod" && labels.site == "fra"' (equality only until the policy language lands)`)
	cmd.Flags().BoolVar(&all, "all", false, "rotate every agent")
	cmd.Flags().Float64Var(&rate, "rate", 0, "rotations per second for this batch (default: the server's rotation_rate)")
	cmd.Flags().StringVar(&dest, "destination", "opamp", "which certificate: opamp or a configured destination (own_metrics, ...)")
	cmd.Flags().BoolVar(&noWait, "no-wait", false, "return once the rotation is accepted")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Minute, "give up waiting after this long")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

func progressLine(st api.RotationStatus) string {
	keys := make([]string, 0, len(st.States))
	for k := range st.States {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, st.States[k]))
	}
	return fmt.Sprintf("%d agents: %s", st.Total, strings.Join(parts, ", "))
}

func newCertsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "certs", Short: "Inspect issued agent certificates"}
	var (
		cf       clientFlags
		expiring time.Duration
		uid      string
		statuses []string
		output   string
	)
	list := &cobra.Command{
		Use:   "list",
		Short: "List certificates in use or offered (soonest expiry first)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output, "table", "json"); err != nil {
				return err
			}
			q := map[string][]string{"status": statuses}
			if expiring > 0 {
				q["expiring_within"] = []string{expiring.String()}
			}
			if uid != "" {
				q["uid"] = []string{uid}
			}
			c, err := cf.client(g)
			if err != nil {
				return err
			}
			certs, err := c.Certificates(cmd.Context(), q)
			if err != nil {
				return err
			}
			if output == "json" {
				return printJSON(cmd.OutOrStdout(), certs)
			}
			rows := make([][]string, 0, len(certs))
			for _, ct := range certs {
				rows = append(rows, []string{shortSerial(ct.Serial), ct.UID, ct.Status, ct.Profile, fmtTime(&ct.NotAfter), fmtTime(ct.RenewAfter), yesNo(ct.ServerMadeKey)})
			}
			return printTable(cmd.OutOrStdout(), []string{"SERIAL", "UID", "STATUS", "PROFILE", "EXPIRES", "RENEW AFTER", "SERVER KEY"}, rows)
		},
	}
	cf.register(list)
	list.Flags().DurationVar(&expiring, "expiring", 0, "only certificates expiring within this duration")
	list.Flags().StringVar(&uid, "uid", "", "only this agent's certificates")
	list.Flags().StringArrayVar(&statuses, "status", nil, "offered, confirmed, retired (repeatable; default offered and confirmed)")
	list.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	cmd.AddCommand(list)
	return cmd
}

// labelSelector merges --label k=v flags and a --selector expression into
// one label set; nil when neither was given.
func labelSelector(labels []string, selector string) (map[string]string, error) {
	var out map[string]string
	if selector != "" {
		sel, err := parseSelector(selector)
		if err != nil {
			return nil, err
		}
		out = sel
	}
	for _, l := range labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--label %q: want key=value", l)
		}
		if prev, dup := out[k]; dup && prev != v {
			// Both must hold, and cannot: refusing beats acting on
			// whichever came last (a revocation of the wrong agents).
			return nil, fmt.Errorf("--label %q: label %s is already required to be %q; no agent can match both", l, k, prev)
		}
		if out == nil {
			out = map[string]string{}
		}
		out[k] = v
	}
	return out, nil
}

var selectorTerm = regexp.MustCompile(`^\s*labels\.([A-Za-z0-9][A-Za-z0-9._/-]*)\s*==\s*"([^"]*)"\s*$`)

// parseSelector reads label equality terms joined by &&, the subset of the
// policy selector language the server can evaluate today.
func parseSelector(s string) (map[string]string, error) {
	if !utf8.ValidString(s) {
		// CEL would read the invalid bytes as U+FFFD and mean another value.
		return nil, fmt.Errorf("--selector: %q is not valid UTF-8", s)
	}
	out := map[string]string{}
	for _, term := range strings.Split(s, "&&") {
		m := selectorTerm.FindStringSubmatch(term)
		if m == nil {
			return nil, fmt.Errorf("--selector: %q is not labels.KEY == \"VALUE\" (only label equality joined by && is supported until policies land)", strings.TrimSpace(term))
		}
		if prev, dup := out[m[1]]; dup && prev != m[2] {
			return nil, fmt.Errorf("--selector: labels.%s is required to be both %q and %q; no agent can match", m[1], prev, m[2])
		}
		if strings.Contains(m[2], `\`) {
			return nil, fmt.Errorf("--selector: %q: escapes in label values are not supported (use --label KEY=VALUE)", strings.TrimSpace(term))
		}
		out[m[1]] = m[2]
	}
	return out, nil
}
