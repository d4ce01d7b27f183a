package main

import (
	"fmt"
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
			req := api.TokenRequest{TTL: ttl.String(), Uses: uses}
			var err error
			if req.Labels, err = labelSelector(labels, ""); err != nil {
				return err
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
	cmd.AddCommand(create, newTokenListCmd(g), newTokenRevokeCmd(g))
	return cmd
}

func newAdminTokenCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "admin-token", Short: "Manage admin API tokens (roles admin and security)"}
	var (
		cf         clientFlags
		name, role string
		output     string
	)
	create := &cobra.Command{
		Use:   "create --name NAME --role ROLE",
		Short: "Create an admin API token with a role (printed alone on stdout)",
		Long: `create mints an admin API token for a person or a pipeline. Roles:
  admin     runs the server; mints admin, release and auditor tokens
  security  revoke, undo holds, release quarantines, rotate, enrollment
            tokens; the only role that mints security tokens
  release   publish and manage packages
  auditor   read-only: registry, certificates, reports, token listings
admin may not mint security tokens (separation of duties: the role that runs
the fleet cannot give itself the power to lift a quarantine); the first
security token comes from 'trustamp admin-token bootstrap-security' on the
server host. The token is shown once and stored hashed; its creation is
audited.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output, "token", "json"); err != nil {
				return err
			}
			c, err := cf.client(g)
			if err != nil {
				return err
			}
			res, err := c.CreateAdminToken(cmd.Context(), api.AdminTokenRequest{Name: name, Role: role})
			if err != nil {
				return err
			}
			if output == "json" {
				return printJSON(cmd.OutOrStdout(), res)
			}
			fmt.Fprintln(cmd.OutOrStdout(), res.Token)
			fmt.Fprintf(cmd.ErrOrStderr(), "admin token %s (%s, role %s): shown once, keep it secret\n", res.ID, res.Name, res.Role)
			return nil
		},
	}
	cf.register(create)
	create.Flags().StringVar(&name, "name", "", "whose token it is (required)")
	create.Flags().StringVar(&role, "role", "", "admin, security, release or auditor (required)")
	create.Flags().StringVarP(&output, "output", "o", "token", "output: token (the secret alone) or json")
	create.MarkFlagRequired("name")
	create.MarkFlagRequired("role")
	cmd.AddCommand(create, newAdminTokenListCmd(g), newAdminTokenRevokeCmd(g), newAdminTokenBootstrapCmd(g))
	return cmd
}
