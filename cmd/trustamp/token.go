package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/trustamp/trustamp/api"
)

func newTokenCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Manage enrollment tokens"}
	var (
		cf     clientFlags
		ttl    time.Duration
		uses   int
		labels []string
		output string
	)
	create := &cobra.Command{
		Use:   "create",
		Short: "Create an enrollment token (printed alone on stdout)",
		Long: `create mints an enrollment token: an agent presenting it as
"Authorization: Bearer <token>" may obtain its first certificate. Tokens are
stored hashed, single-use by default, and expire; their labels become the
enrolled agent's labels.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output, "token", "json"); err != nil {
				return err
			}
			req := api.TokenRequest{TTL: ttl.String(), Uses: uses, Labels: map[string]string{}}
			for _, l := range labels {
				k, v, ok := strings.Cut(l, "=")
				if !ok || k == "" {
					return fmt.Errorf("--label %q: want key=value", l)
				}
				req.Labels[k] = v
			}
			c, err := cf.client(g)
			if err != nil {
				return err
			}
			resp, err := c.CreateToken(cmd.Context(), req)
			if err != nil {
				return err
			}
			if output == "json" {
				return printJSON(cmd.OutOrStdout(), resp)
			}
			fmt.Fprintln(cmd.OutOrStdout(), resp.Token)
			fmt.Fprintf(cmd.ErrOrStderr(), "enrollment token %s: %d use(s), expires %s\n", resp.ID, resp.Uses, resp.ExpiresAt.Format(time.RFC3339))
			return nil
		},
	}
	cf.register(create)
	create.Flags().DurationVar(&ttl, "ttl", time.Hour, "how long the token is valid")
	create.Flags().IntVar(&uses, "uses", 1, "how many agents may enroll with it")
	create.Flags().StringArrayVar(&labels, "label", nil, "label k=v given to enrolled agents (repeatable)")
	create.Flags().StringVarP(&output, "output", "o", "token", "output: token (the secret alone) or json")
	cmd.AddCommand(create)
	return cmd
}
