package main

import (
	"fmt"
	"os/user"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/trustamp/trustamp/api"
	"github.com/trustamp/trustamp/audit"
	"github.com/trustamp/trustamp/datadir"
	"github.com/trustamp/trustamp/tokens"
)

func newTokenListCmd(g *globals) *cobra.Command {
	return newListCmd(g, listing[api.EnrollmentToken]{
		Use: "list", Short: "List enrollment tokens (ids, never secrets)",
		Header: []string{"ID", "STATE", "USED", "LEFT", "CREATED", "EXPIRES", "REVOKED", "CREATED BY", "LABELS"},
		Fetch:  (*api.Client).Tokens,
		Row: func(t api.EnrollmentToken) []string {
			return []string{t.ID, t.State, strconv.Itoa(t.Used) + "/" + strconv.Itoa(t.MaxUses), strconv.Itoa(t.UsesLeft),
				fmtTime(&t.CreatedAt), fmtTime(&t.ExpiresAt), fmtTime(t.RevokedAt), t.CreatedBy, fmtLabels(t.Labels)}
		},
	})
}

func newTokenRevokeCmd(g *globals) *cobra.Command {
	var (
		cf   clientFlags
		note string
	)
	cmd := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke an enrollment token: no agent can enroll with it any more",
		Long: `revoke ends an enrollment token before it expires or is used up; the
revocation is audited. Agents that already enrolled with it keep their
certificates (revoke those with 'trustamp revoke').`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client(g)
			if err != nil {
				return err
			}
			t, err := c.RevokeToken(cmd.Context(), args[0], note)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "enrollment token %s revoked (%d of %d uses spent)\n", t.ID, t.Used, t.MaxUses)
			return nil
		},
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&note, "note", "", "why (recorded in the audit log)")
	return cmd
}

func newAdminTokenListCmd(g *globals) *cobra.Command {
	return newListCmd(g, listing[api.AdminToken]{
		Use: "list", Short: "List admin API tokens (ids and roles, never secrets)",
		Header: []string{"ID", "NAME", "ROLE", "CREATED", "CREATED BY", "REVOKED", "REVOKED AT"},
		Fetch:  (*api.Client).AdminTokens,
		Row: func(t api.AdminToken) []string {
			return []string{t.ID, t.Name, t.Role, fmtTime(&t.CreatedAt), orDash(t.CreatedBy), yesNo(t.Revoked), fmtTime(t.RevokedAt)}
		},
	})
}

func newAdminTokenRevokeCmd(g *globals) *cobra.Command {
	var (
		cf   clientFlags
		note string
	)
	cmd := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke an admin API token: refused from the next request on",
		Long: `revoke ends an admin API token at once; the revocation is audited.
admin may revoke admin, release and auditor tokens; security may revoke any.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client(g)
			if err != nil {
				return err
			}
			t, err := c.RevokeAdminToken(cmd.Context(), args[0], note)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "admin token %s (%s, role %s) revoked\n", t.ID, t.Name, t.Role)
			return nil
		},
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&note, "note", "", "why (recorded in the audit log)")
	return cmd
}

func newAdminTokenBootstrapCmd(g *globals) *cobra.Command {
	var name, output string
	cmd := &cobra.Command{
		Use:   "bootstrap-security --data DIR --name NAME",
		Short: "Mint the first security token, on the server host (printed alone on stdout)",
		Long: `bootstrap-security mints a security-role token directly in the state
database of the data dir, without the admin API: only the security role may
mint security tokens over the API, and admin may not (separation of duties),
so the first one comes from whoever controls the server host. The action is
audited as admin_token.bootstrap_security by the local user.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output, "token", "json"); err != nil {
				return err
			}
			if g.dataDir == "" {
				return fmt.Errorf("bootstrap-security works on the server host only: pass --data DIR")
			}
			d, err := datadir.Open(cmd.Context(), datadir.Options{Layout: g.layout()})
			if err != nil {
				return err
			}
			defer d.Close()
			actor := "local:unknown"
			if u, err := user.Current(); err == nil {
				actor = "local:" + u.Username
			}
			svc := tokens.NewService(tokens.ServiceConfig{Store: d.Store, Audit: audit.New(audit.Config{})})
			tok, rec, err := svc.BootstrapSecurity(cmd.Context(), name, actor)
			if err != nil {
				return err
			}
			if output == "json" {
				return printJSON(cmd.OutOrStdout(), api.AdminTokenResponse{ID: tok.ID, Name: rec.Name, Role: rec.Role, Token: tok.Secret})
			}
			fmt.Fprintln(cmd.OutOrStdout(), tok.Secret)
			fmt.Fprintf(cmd.ErrOrStderr(), "security token %s (%s) at %s: shown once, keep it secret\n", tok.ID, name, rec.CreatedAt.UTC().Format(time.RFC3339))
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "whose token it is (required)")
	cmd.Flags().StringVarP(&output, "output", "o", "token", "output: token (the secret alone) or json")
	cmd.MarkFlagRequired("name")
	return cmd
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
