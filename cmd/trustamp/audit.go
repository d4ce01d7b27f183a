package main

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/trustamp/trustamp/audit"
	"github.com/trustamp/trustamp/datadir"
)

func newAuditCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Export and verify the tamper-evident audit log",
	}
	cmd.AddCommand(newAuditExportCmd(g), newAuditVerifyCmd(g))
	return cmd
}

func newAuditExportCmd(g *globals) *cobra.Command {
	var since, output, outFile string
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Export audit entries (JSON Lines, verifiable; or CSV)",
		Long: `export writes the audit log of the data dir's database from one consistent
snapshot. The JSON Lines form carries the signed checkpoints and the audit
public key, so "trustamp audit verify FILE" can check it anywhere.

--since takes an RFC 3339 time (2026-11-01T00:00:00Z) or a duration back from
now (24h, 720h).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output, "jsonl", "csv"); err != nil {
				return err
			}
			from, err := parseSince(since, time.Now())
			if err != nil {
				return err
			}
			d, err := datadir.Open(cmd.Context(), datadir.Options{Layout: g.layout()})
			if err != nil {
				return err
			}
			defer d.Close()
			pub, err := d.AuditPublicKey()
			if err != nil {
				return err
			}
			var w io.Writer = cmd.OutOrStdout()
			if outFile != "" {
				f, err := os.OpenFile(outFile, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
				if err != nil {
					return err
				}
				defer f.Close()
				w = f
			}
			n, err := audit.Export(cmd.Context(), w, d.Store, audit.ExportOptions{Since: from, Format: output, PublicKey: pub})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "exported %d entries\n", n)
			return nil
		},
	}
	cmd.Flags().StringVar(&since, "since", "", "only entries at or after this time (RFC 3339 or a duration such as 24h)")
	cmd.Flags().StringVarP(&output, "output", "o", "jsonl", "format: jsonl or csv")
	cmd.Flags().StringVar(&outFile, "out", "", "write to this file (0600) instead of stdout")
	return cmd
}

func parseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("--since %q: want an RFC 3339 time (2026-11-01T00:00:00Z) or a positive duration (24h)", s)
}

func newAuditVerifyCmd(g *globals) *cobra.Command {
	var keyFile, output string
	cmd := &cobra.Command{
		Use:   "verify [FILE]",
		Short: "Recompute the hash chain and checkpoint signatures; name the first bad entry",
		Long: `verify checks the audit log in the data dir's database (no FILE) or a JSON
Lines export (FILE, "-" for stdin). It recomputes every entry's hash, checks
that each links to the one before, and checks every signed checkpoint against
the audit public key. It exits non-zero and names the first entry that fails.

Verifying the data dir's database opens it read-only (a read-only copy
works) and also checks it against the data dir's state anchor: the state id
must match and the chain must contain the anchored checkpoint, so a log
truncated or rolled back to an older copy of the database fails.

The public key is --key when given; otherwise the data dir's
keys/audit.pub.pem; for a FILE with neither, the key in the export's own
header (which proves only self-consistency: pass --key with a copy obtained
independently).`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output, "table", "json"); err != nil {
				return err
			}
			var pub ed25519.PublicKey
			if keyFile != "" {
				b, err := os.ReadFile(keyFile)
				if err != nil {
					return err
				}
				if pub, err = audit.ParsePublicKey(b); err != nil {
					return fmt.Errorf("--key %s: %w", keyFile, err)
				}
			}
			var (
				rep          audit.Report
				keySource    = "--key"
				anchorStatus string
				verr         error
			)
			if len(args) == 1 {
				if pub == nil && cmd.Flags().Changed("data") {
					d, err := datadir.Open(cmd.Context(), datadir.Options{Layout: g.layout(), ReadOnly: true})
					if err != nil {
						return err
					}
					pub, err = d.AuditPublicKey()
					d.Close()
					if err != nil {
						return err
					}
					keySource = "data dir"
				}
				r, err := openInput(args[0], cmd.InOrStdin())
				if err != nil {
					return err
				}
				defer r.Close()
				var embedded *audit.ExportKey
				rep, embedded, verr = audit.VerifyExport(r, pub)
				if embedded != nil {
					keySource = "export header (unanchored: pass --key)"
				} else if pub == nil {
					keySource = "none"
				}
			} else {
				d, err := datadir.Open(cmd.Context(), datadir.Options{Layout: g.layout(), ReadOnly: true})
				if err != nil {
					return err
				}
				defer d.Close()
				if pub == nil {
					if pub, err = d.AuditPublicKey(); err != nil {
						return err
					}
					keySource = "data dir"
				}
				anchor, serr := datadir.CheckState(cmd.Context(), d, pub)
				if serr != nil && !errors.Is(serr, datadir.ErrStateMismatch) {
					return serr
				}
				var cp *audit.Checkpoint
				anchorStatus = "none (a data dir from before anchors, not yet started)"
				if anchor != nil {
					cp = anchor.Checkpoint
					anchorStatus = fmt.Sprintf("state %s in %s", anchor.StateID, d.AnchorSource())
					if cp != nil {
						anchorStatus += fmt.Sprintf(", checkpoint at entry %d", cp.Seq)
					}
				}
				rep, verr = audit.VerifyStoreAnchored(cmd.Context(), d.Store, pub, cp, d.AnchorSource())
				if serr != nil {
					var se *datadir.StateError
					errors.As(serr, &se)
					if verr == nil {
						verr = &audit.VerifyError{Seq: rep.LastSeq, Reason: fmt.Sprintf("state database %s: %s", se.Problem, se.Detail)}
					}
				}
			}
			var ve *audit.VerifyError
			if verr != nil && !errors.As(verr, &ve) {
				return verr
			}
			printVerify(cmd, output, rep, keySource, anchorStatus, ve)
			if ve != nil {
				return fmt.Errorf("audit log does NOT verify: %w", verr)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&keyFile, "key", "", "audit public key (PEM) to check checkpoint signatures against")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

func printVerify(cmd *cobra.Command, output string, rep audit.Report, keySource, anchorStatus string, ve *audit.VerifyError) {
	if output == "json" {
		out := struct {
			OK        bool               `json:"ok"`
			Report    audit.Report       `json:"report"`
			KeySource string             `json:"key_source"`
			Anchor    string             `json:"anchor,omitempty"`
			FirstBad  *audit.VerifyError `json:"first_bad,omitempty"`
		}{ve == nil, rep, keySource, anchorStatus, ve}
		printJSON(cmd.OutOrStdout(), out)
		return
	}
	status := "OK"
	if ve != nil {
		status = "FAILED"
	}
	rows := [][]string{
		{"status", status},
		{"entries checked", strconv.FormatInt(rep.Entries, 10)},
		{"range", fmt.Sprintf("%d-%d", rep.FirstSeq, rep.LastSeq)},
		{"head hash", rep.HeadHash.String()},
		{"checkpoints verified", strconv.Itoa(rep.Checkpoints)},
		{"last signed entry", strconv.FormatInt(rep.LastCheckpointSeq, 10)},
		{"signature key", keySource},
	}
	if anchorStatus != "" {
		rows = append(rows, []string{"state anchor", anchorStatus})
	}
	if ve != nil {
		rows = append(rows, []string{"first bad", ve.Error()})
	}
	printTable(cmd.OutOrStdout(), []string{"CHECK", "RESULT"}, rows)
}

func openInput(name string, stdin io.Reader) (io.ReadCloser, error) {
	if name == "-" {
		return io.NopCloser(stdin), nil
	}
	return os.Open(name)
}
