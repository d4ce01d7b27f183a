package main

import (
	"crypto"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/trustamp/trustamp/agent"
	"github.com/trustamp/trustamp/signing"
)

func newAgentCmd() *cobra.Command {
	var (
		cfg                   agent.Config
		caFile, tokenFile     string
		publisherKeys         []string
		logLevel, logFormat   string
		heartbeat, maxBackoff time.Duration
	)
	cmd := &cobra.Command{
		Use:   "agent --server wss://HOST:4320/v1/opamp --ca CA.pem --state DIR [--enroll-token-file F] [--publisher-key PUB]... [-- COMMAND ARGS...]",
		Short: "Run the reference agent: enroll, rotate by CSR, install signed packages, supervise COMMAND",
		Long: `agent is trustamp's reference OpAMP agent. It keeps its identity in --state
(uid, key 0600, certificate), enrolls once with the token in
--enroll-token-file and a CSR, and from then on connects with mTLS, never
needing the token again. It sends a fresh CSR before its certificate's renew
point and when the server asks (io.trustamp.csr), switching only once a
connection with the new certificate succeeded.

Packages the server offers are checked (SHA-256 against content_hash, the
Sigstore bundle against --publisher-key, and the downgrade mark on a lower
version), unpacked to a new directory and switched to atomically. COMMAND is
run and supervised; {pkg} in its arguments is the installed version's
directory. A new version that exits within --health-window is rolled back.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cfg.ServerURL == "" || caFile == "" || cfg.StateDir == "" {
				return fmt.Errorf("--server, --ca and --state are required")
			}
			if !strings.HasPrefix(cfg.ServerURL, "wss://") {
				return fmt.Errorf("--server %q: the agent speaks OpAMP over WebSocket with TLS (wss://)", cfg.ServerURL)
			}
			var err error
			if cfg.CAPEM, err = os.ReadFile(caFile); err != nil {
				return fmt.Errorf("--ca: %w", err)
			}
			for _, f := range publisherKeys {
				b, err := os.ReadFile(f)
				if err != nil {
					return fmt.Errorf("--publisher-key: %w", err)
				}
				pub, err := signing.ParsePublicKey(b)
				if err != nil {
					return fmt.Errorf("--publisher-key %s: %w", f, err)
				}
				cfg.PublisherKeys = append(cfg.PublisherKeys, crypto.PublicKey(pub))
			}
			if tokenFile != "" {
				cfg.Token = func() (string, error) {
					b, err := os.ReadFile(tokenFile)
					if err != nil {
						return "", err
					}
					return strings.TrimSpace(string(b)), nil
				}
			}
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			opts := &slog.HandlerOptions{Level: level}
			cfg.Logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), opts))
			if logFormat == "json" {
				cfg.Logger = slog.New(slog.NewJSONHandler(cmd.ErrOrStderr(), opts))
			}
			cfg.Command, cfg.Heartbeat, cfg.MaxBackoff = args, heartbeat, maxBackoff
			cfg.Stdout, cfg.Stderr = cmd.OutOrStdout(), cmd.ErrOrStderr()
			a, err := agent.New(cfg)
			if err != nil {
				return err
			}
			return a.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.ServerURL, "server", "", "OpAMP endpoint, wss://host:4320/v1/opamp")
	f.StringVar(&caFile, "ca", "", "CA bundle that verifies the server (the server's /v1/ca.pem)")
	f.StringVar(&tokenFile, "enroll-token-file", "", "file holding the enrollment token (read only when not enrolled yet)")
	f.StringVar(&cfg.StateDir, "state", "", "state directory: identity, certificate, installed packages")
	f.StringVar(&cfg.Type, "type", "", "package type, sent as service.name (default trustamp-agent)")
	f.StringArrayVar(&publisherKeys, "publisher-key", nil, "PEM public key that signs packages (repeatable); without one every package is refused")
	f.DurationVar(&cfg.HealthWindow, "health-window", 10*time.Second, "a new version must stay up this long or it is rolled back")
	f.BoolVar(&cfg.AcceptServerKeys, "accept-server-keys", false, "accept certificates with a server-made private key")
	f.DurationVar(&heartbeat, "heartbeat", 30*time.Second, "OpAMP heartbeat interval")
	f.DurationVar(&maxBackoff, "max-backoff", 5*time.Minute, "cap of the jittered wait between attempts when the server refuses the agent (revoked, quarantined)")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&logFormat, "log-format", "text", "text or json")
	return cmd
}
