package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/trustamp/trustamp/api"
	"github.com/trustamp/trustamp/loadgen"
)

func newLoadgenCmd(g *globals) *cobra.Command {
	var (
		cfg               loadgen.Config
		tokenFile, caFile string
		output            string
	)
	cmd := &cobra.Command{
		Use:   "loadgen",
		Short: "Simulate N agents: enroll with CSR, reconnect with mTLS, heartbeat",
		Long: `loadgen runs N simulated agents on the opamp-go client against a trustamp
server and reports the connect rate, enrollment latency percentiles and errors.
The token file must hold an enrollment token with at least N uses:

  trustamp token create --uses 5000 --ttl 1h > token
  trustamp loadgen --server wss://localhost:4320/v1/opamp --agents 5000 --token-file token

Use https://... for OpAMP's plain-HTTP transport.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output, "table", "json"); err != nil {
				return err
			}
			tok, err := os.ReadFile(tokenFile)
			if err != nil {
				return fmt.Errorf("--token-file: %w", err)
			}
			cfg.Token = strings.TrimSpace(string(tok))
			if caFile == "" {
				caFile = g.layout().CAFiles().Root()
			}
			if cfg.CAPEM, err = os.ReadFile(caFile); err != nil {
				return fmt.Errorf("--ca: %w", err)
			}
			cfg.Progress = cmd.ErrOrStderr()
			if cfg.Revoke > 0 {
				// The admin API: TRUSTAMP_SERVER/TRUSTAMP_TOKEN, else the
				// local server of --data.
				admin, err := (&clientFlags{}).client(g)
				if err != nil {
					return fmt.Errorf("--revoke needs the admin API: %w", err)
				}
				cfg.Revoker = func(ctx context.Context, uid string) (time.Duration, int, error) {
					res, err := admin.Revoke(ctx, api.RevocationRequest{UIDs: []string{uid}, Reason: "keyCompromise", Note: "loadgen"})
					if err != nil || res.DisconnectedAt == nil {
						return 0, 0, err
					}
					return res.DisconnectedAt.Sub(res.RequestedAt), res.ClosedConnections, nil
				}
			}
			rep, err := loadgen.Run(cmd.Context(), cfg)
			if output == "json" {
				printJSON(cmd.OutOrStdout(), rep)
			} else {
				printTable(cmd.OutOrStdout(), []string{"METRIC", "VALUE"}, [][]string{
					{"agents", fmt.Sprint(rep.Agents)}, {"enrolled", fmt.Sprint(rep.Enrolled)},
					{"connected (mTLS)", fmt.Sprint(rep.Connected)}, {"errors", fmt.Sprint(rep.Errors)},
					{"elapsed", rep.Elapsed.Round(time.Millisecond).String()},
					{"connect rate", fmt.Sprintf("%.1f agents/s", rep.ConnectRate)},
					{"enroll p50 / p99 / max", fmt.Sprintf("%s / %s / %s", ms(rep.EnrollP50), ms(rep.EnrollP99), ms(rep.EnrollMax))},
					{"mTLS connect p50 / p99", fmt.Sprintf("%s / %s", ms(rep.ConnectP50), ms(rep.ConnectP99))},
					{"rotated during the run", fmt.Sprint(rep.Rotated)},
				})
				if rep.Revoked > 0 {
					printTable(cmd.OutOrStdout(), []string{"REVOCATION", "VALUE"}, [][]string{
						{"revoked (one at a time)", fmt.Sprintf("%d of %d connected", rep.Revoked, rep.ConnectedDuringRevoke)},
						{"live connections closed", fmt.Sprint(rep.RevokeClosed)},
						{"request to disconnect p50 / p99 / max", fmt.Sprintf("%s / %s / %s", ms(rep.RevokeDisconnectP50), ms(rep.RevokeDisconnectP99), ms(rep.RevokeDisconnectMax))},
						{"API round trip p50 / p99 (incl. new CRL)", fmt.Sprintf("%s / %s", ms(rep.RevokeAPIP50), ms(rep.RevokeAPIP99))},
					})
				}
				for kind, n := range rep.ErrorKind {
					fmt.Fprintf(cmd.ErrOrStderr(), "error x%d: %s\n", n, kind)
				}
			}
			if err != nil {
				return err
			}
			if rep.Errors > 0 {
				return fmt.Errorf("%d of %d agents failed", rep.Errors, rep.Agents)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&cfg.ServerURL, "server", "wss://localhost:4320/v1/opamp", "OpAMP URL (wss:// for WebSocket, https:// for plain HTTP)")
	cmd.Flags().IntVar(&cfg.Agents, "agents", 100, "agents to simulate")
	cmd.Flags().IntVar(&cfg.Concurrency, "concurrency", 50, "agents enrolling at once")
	cmd.Flags().DurationVar(&cfg.Heartbeat, "heartbeat", 30*time.Second, "agent heartbeat (HTTP: polling) interval")
	cmd.Flags().DurationVar(&cfg.Hold, "hold", 0, "keep all agents connected this long after the last connects")
	cmd.Flags().BoolVar(&cfg.CSRCapability, "csr-capability", true, "agents declare io.trustamp.csr and answer CSR requests")
	cmd.Flags().BoolVar(&cfg.AcceptServerKeys, "accept-server-keys", false, "agents accept offers with server-made keys")
	cmd.Flags().IntVar(&cfg.Revoke, "revoke", 0, "after all connected, revoke this many agents one at a time (admin API from TRUSTAMP_SERVER/TOKEN or --data) and report revocation-to-disconnect latency")
	cmd.Flags().StringVar(&tokenFile, "token-file", "", "file holding an enrollment token with enough uses (required)")
	cmd.Flags().StringVar(&caFile, "ca", "", "CA bundle (default: DATA/ca/root.pem)")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	cmd.MarkFlagRequired("token-file")
	return cmd
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond)) }
