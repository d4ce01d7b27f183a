package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/trustamp/trustamp/api"
	"github.com/trustamp/trustamp/config"
	"github.com/trustamp/trustamp/policies"
)

func newPolicyCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "policy", Short: "Check, simulate, show and reload CEL policies"}
	cmd.AddCommand(newPolicyCheckCmd(g), newPolicySimulateCmd(g), newPolicyShowCmd(g), newPolicyReloadCmd(g))
	return cmd
}

func newPolicyCheckCmd(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "check DIR",
		Short: "Validate policy files offline (parse, type-check, profile names)",
		Long: `check compiles every *.yaml in DIR exactly as the server would and lists the
rules. Certificate profile names are checked against the configuration when
one is found (--config, or DATA/trustamp.yaml). It exits non-zero, naming
file, line and the error, when the set would be refused.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output, "table", "json"); err != nil {
				return err
			}
			if _, err := os.Stat(args[0]); err != nil {
				return fmt.Errorf("policy directory: %w", err)
			}
			set, err := policies.Load(args[0])
			if err != nil {
				return err
			}
			if known, ok, err := configuredProfiles(g); err != nil {
				return err
			} else if ok {
				if err := set.CheckProfiles(known); err != nil {
					return err
				}
			}
			desc := api.DescribePolicySet(set)
			if output == "json" {
				return printJSON(cmd.OutOrStdout(), desc)
			}
			if err := printRules(cmd, desc); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "ok: %d files, %d rules\n", len(desc.Files), len(desc.Rules))
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

// configuredProfiles reads the certificate profile names from the config
// file, when there is one.
func configuredProfiles(g *globals) ([]string, bool, error) {
	path := g.layout().Config()
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil, false, nil
	}
	c, err := config.Load(path, os.Getenv)
	if err != nil {
		return nil, false, err
	}
	known := []string{c.Certificates.Profile}
	for name := range c.Certificates.Profiles {
		if name != c.Certificates.Profile {
			known = append(known, name)
		}
	}
	sort.Strings(known[1:])
	return known, true, nil
}

func printRules(cmd *cobra.Command, p api.PolicySet) error {
	rows := make([][]string, 0, len(p.Rules))
	for _, r := range p.Rules {
		rows = append(rows, []string{r.Kind, r.Name, r.File + ":" + strconv.Itoa(r.Line), strconv.FormatInt(r.EvalErrors, 10)})
	}
	return printTable(cmd.OutOrStdout(), []string{"KIND", "RULE", "WHERE", "EVAL ERRORS"}, rows)
}

func newPolicySimulateCmd(g *globals) *cobra.Command {
	var (
		cf      clientFlags
		output  string
		changed bool
	)
	cmd := &cobra.Command{
		Use:   "simulate DIR",
		Short: "Show what every agent would get under the policy files in DIR, before they go live",
		Long: `simulate sends the policy files in DIR to the server, which evaluates them
against every agent in its registry next to the policies in force: the
certificate profile, the package target (with the downgrade mark) and the
rollout wave each agent would get. Nothing changes on the server.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output, "table", "json"); err != nil {
				return err
			}
			raw, err := policies.ReadDir(args[0])
			if err != nil {
				return err
			}
			files := make(map[string]string, len(raw))
			for name, b := range raw {
				files[name] = string(b)
			}
			c, err := cf.client(g)
			if err != nil {
				return err
			}
			res, err := c.SimulatePolicies(cmd.Context(), files)
			if err != nil {
				return err
			}
			if changed {
				kept := res.Agents[:0]
				for _, a := range res.Agents {
					if len(a.Changes) > 0 {
						kept = append(kept, a)
					}
				}
				res.Agents = kept
			}
			if output == "json" {
				return printJSON(cmd.OutOrStdout(), res)
			}
			rows := make([][]string, 0, len(res.Agents))
			for _, a := range res.Agents {
				rows = append(rows, []string{a.UID, arrow(a.Current.Profile, a.Next.Profile),
					arrow(targetText(a.Current), targetText(a.Next)), arrow(a.Current.Wave, a.Next.Wave),
					strings.Join(a.Changes, ","), a.Next.Rule})
			}
			if err := printTable(cmd.OutOrStdout(), []string{"AGENT", "PROFILE", "TARGET", "WAVE", "CHANGES", "WHY (CANDIDATE)"}, rows); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d of %d agents would change\n", res.Changed, len(res.Agents))
			return nil
		},
	}
	cf.register(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	cmd.Flags().BoolVar(&changed, "changed", false, "list only agents that would change")
	return cmd
}

func targetText(s api.SimulatedState) string {
	switch {
	case s.Target == "":
		return "-"
	case s.Downgrade:
		return s.Target + " (downgrade)"
	}
	return s.Target
}

func arrow(cur, next string) string {
	if cur == "" {
		cur = "-"
	}
	if next == "" {
		next = "-"
	}
	if cur == next {
		return cur
	}
	return cur + " -> " + next
}

func newPolicyShowCmd(g *globals) *cobra.Command {
	return policySetCmd(g, "show", "List the policy rules in force, with their files' hashes and evaluation errors",
		(*api.Client).Policies)
}

func newPolicyReloadCmd(g *globals) *cobra.Command {
	return policySetCmd(g, "reload", "Make the server read its policy directory now (audited; a broken set is refused)",
		(*api.Client).ReloadPolicies)
}

// policySetCmd is a command that asks the server for a policy set (show,
// reload) and prints it.
func policySetCmd(g *globals, use, short string, call func(*api.Client, context.Context) (api.PolicySet, error)) *cobra.Command {
	var (
		cf     clientFlags
		output string
	)
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output, "table", "json"); err != nil {
				return err
			}
			c, err := cf.client(g)
			if err != nil {
				return err
			}
			p, err := call(c, cmd.Context())
			if err != nil {
				return err
			}
			if output == "json" {
				return printJSON(cmd.OutOrStdout(), p)
			}
			switch {
			case p.Changed == nil:
			case *p.Changed:
				fmt.Fprintln(cmd.OutOrStdout(), "policies reloaded")
			default:
				fmt.Fprintln(cmd.OutOrStdout(), "policies unchanged")
			}
			return printPolicySet(cmd, p)
		},
	}
	cf.register(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

func printPolicySet(cmd *cobra.Command, p api.PolicySet) error {
	w := cmd.OutOrStdout()
	fmt.Fprintf(w, "policy directory: %s\n", p.Dir)
	names := make([]string, 0, len(p.Files))
	for n := range p.Files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %s  sha256:%s\n", n, p.Files[n])
	}
	if p.LastError != "" {
		fmt.Fprintf(w, "last reload refused: %s\n", p.LastError)
	}
	return printRules(cmd, p)
}
