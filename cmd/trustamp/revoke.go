package main

import (
	"encoding/csv"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/trustamp/trustamp/api"
	"github.com/trustamp/trustamp/revocation"
)

func newRevokeCmd(g *globals) *cobra.Command {
	var (
		cf       clientFlags
		reason   string
		note     string
		serials  []string
		labels   []string
		selector string
		output   string
	)
	cmd := &cobra.Command{
		Use:   "revoke [UID...] --reason REASON",
		Short: "Revoke agents (all their certificates, and quarantine) or single certificates",
		Long: `revoke cuts agents off at once. For each agent named by uid, --label or
--selector it revokes every unexpired certificate (the OpAMP connection's and
every other destination's) and quarantines the identity; --serial revokes one
certificate only. In the same operation the live connections using those
certificates are closed, later handshakes presenting them are refused with
401, and a new CRL is published. It is one transaction: all of it or nothing.

--reason is required, one of the RFC 5280 reasons:
  ` + strings.Join(revocation.ReasonNames(), ", ") + `
Only certificateHold can be undone (trustamp revoke undo --serial); every other
reason is final.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output, "table", "json"); err != nil {
				return err
			}
			if _, err := revocation.ReasonCode(reason); err != nil {
				return fmt.Errorf("--reason: %w", err)
			}
			sel, err := labelSelector(labels, selector)
			if err != nil {
				return err
			}
			if len(args) == 0 && len(serials) == 0 && sel == nil {
				return fmt.Errorf("name what to revoke: agent UIDs, --serial, --label or --selector")
			}
			c, err := cf.client(g)
			if err != nil {
				return err
			}
			res, err := c.Revoke(cmd.Context(), api.RevocationRequest{UIDs: args, Labels: sel, Serials: serials, Reason: reason, Note: note})
			if err != nil {
				return err
			}
			if output == "json" {
				return printJSON(cmd.OutOrStdout(), res)
			}
			rows := make([][]string, 0, len(res.Revoked))
			for _, r := range res.Revoked {
				rows = append(rows, []string{r.Serial, r.UID, r.Destination, fmtTime(&r.NotAfter), strconv.Itoa(r.Connections)})
			}
			if err := printTable(cmd.OutOrStdout(), []string{"SERIAL", "UID", "DESTINATION", "EXPIRES", "CLOSED CONNECTIONS"}, rows); err != nil {
				return err
			}
			w := cmd.ErrOrStderr()
			fmt.Fprintf(w, "revocation %s (%s): %d certificates revoked, %d agents quarantined, %d live connections closed",
				res.RequestID, res.Reason, len(res.Revoked), len(res.Quarantined), res.ClosedConnections)
			if res.DisconnectedAt != nil {
				fmt.Fprintf(w, " in %s", res.DisconnectedAt.Sub(res.RequestedAt).Round(time.Microsecond))
			}
			fmt.Fprintln(w)
			if res.CRLError != "" {
				fmt.Fprintf(w, "warning: the CRL could not be regenerated now (%s); the server retries, and handshakes are refused already\n", res.CRLError)
			} else {
				fmt.Fprintf(w, "CRL number %d lists it\n", res.CRLNumber)
			}
			return nil
		},
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&reason, "reason", "", "RFC 5280 reason (required): "+strings.Join(revocation.ReasonNames(), ", "))
	cmd.Flags().StringVar(&note, "note", "", "free text recorded with the revocation and in the audit log")
	cmd.Flags().StringArrayVar(&serials, "serial", nil, "revoke this certificate only (hex serial; repeatable)")
	cmd.Flags().StringArrayVar(&labels, "label", nil, "revoke agents with label k=v (repeatable; all must match)")
	cmd.Flags().StringVar(&selector, "selector", "", `label selector: 'labels.env == "prod" && labels.site == "fra"'`)
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	cmd.MarkFlagRequired("reason")
	cmd.AddCommand(newRevokeUndoCmd(g))
	return cmd
}

func newRevokeUndoCmd(g *globals) *cobra.Command {
	var (
		cf     clientFlags
		serial string
		note   string
	)
	cmd := &cobra.Command{
		Use:   "undo --serial HEX",
		Short: "Lift a certificateHold (other reasons are final)",
		Long: `undo lifts a certificateHold: the certificate is valid again, leaves the CRL,
and its agent may connect with it. When the hold came with an agent
revocation and no other certificate of it is still held, the agent's
quarantine is lifted too. Any other reason is final and is refused.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cf.client(g)
			if err != nil {
				return err
			}
			res, err := c.UndoRevocation(cmd.Context(), api.UndoRequest{Serial: serial, Note: note})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "hold on %s (agent %s) lifted at %s\n", res.Serial, res.UID, res.UndoneAt.UTC().Format(time.RFC3339))
			return nil
		},
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&serial, "serial", "", "serial of the held certificate (hex)")
	cmd.Flags().StringVar(&note, "note", "", "why, recorded in the audit log")
	cmd.MarkFlagRequired("serial")
	return cmd
}

func newReportCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "report", Short: "Compliance reports"}
	var (
		cf       clientFlags
		from, to string
		output   string
	)
	rev := &cobra.Command{
		Use:   "revocations --from DATE [--to DATE]",
		Short: "Every revocation in a period: who, why, how fast it took effect",
		Long: `report revocations lists each revocation requested in [--from, --to): agent,
serials, reason, actor, note, when it was requested, when the last live
connection using it was closed (propagation latency), and whether the
certificate was presented again later and refused; then totals by reason and
the signed audit checkpoint that covers the period, so the same range can be
checked with trustamp audit verify.

DATE is RFC 3339 (2026-11-21T10:00:00Z), a date (2026-11-21, midnight UTC) or a
duration meaning that long ago (24h). --to defaults to now.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output, "table", "json", "csv"); err != nil {
				return err
			}
			now := time.Now()
			f, err := api.ParseTime(from, now)
			if err != nil {
				return fmt.Errorf("--from %q: want RFC 3339, a date or a duration ago", from)
			}
			t := now
			if to != "" {
				if t, err = api.ParseTime(to, now); err != nil {
					return fmt.Errorf("--to %q: want RFC 3339, a date or a duration ago", to)
				}
			}
			c, err := cf.client(g)
			if err != nil {
				return err
			}
			rep, err := c.RevocationReport(cmd.Context(), f, t)
			if err != nil {
				return err
			}
			switch output {
			case "json":
				return printJSON(cmd.OutOrStdout(), rep)
			case "csv":
				return printReportCSV(cmd, rep)
			}
			return printReportTable(cmd, rep)
		},
	}
	cf.register(rev)
	rev.Flags().StringVar(&from, "from", "", "start of the period (required)")
	rev.Flags().StringVar(&to, "to", "", "end of the period (default now)")
	rev.Flags().StringVarP(&output, "output", "o", "table", "output format: table, json or csv")
	rev.MarkFlagRequired("from")
	cmd.AddCommand(rev)
	return cmd
}

var reportHeader = []string{"REQUESTED", "UID", "SERIALS", "REASON", "ACTOR", "NOTE", "LAST DISCONNECT", "PROPAGATION MS",
	"CLOSED", "PRESENTED AFTER", "UNDONE", "AUDIT SEQ"}

func reportRow(r revocation.ReportRow) []string {
	prop := "-"
	if r.PropagationMillis != nil {
		prop = strconv.FormatFloat(*r.PropagationMillis, 'f', 3, 64)
	}
	return []string{r.RequestedAt.UTC().Format(time.RFC3339Nano), r.UID, strings.Join(r.Serials, " "), r.Reason, r.Actor, r.Note,
		fmtTime(r.LastDisconnectAt), prop, strconv.Itoa(r.ClosedConnections), strconv.Itoa(r.PresentedAfter),
		fmtTime(r.UndoneAt), strconv.FormatInt(r.AuditSeq, 10)}
}

func printReportTable(cmd *cobra.Command, rep revocation.Report) error {
	rows := make([][]string, 0, len(rep.Revocations))
	for _, r := range rep.Revocations {
		row := reportRow(r)
		row[2] = shortSerials(r.Serials)
		rows = append(rows, row)
	}
	out := cmd.OutOrStdout()
	if err := printTable(out, reportHeader, rows); err != nil {
		return err
	}
	reasons := make([]string, 0, len(rep.ByReason))
	for k := range rep.ByReason {
		reasons = append(reasons, k)
	}
	sort.Strings(reasons)
	fmt.Fprintf(out, "\n%d revocation requests, %d certificates, %s to %s\n", len(rep.Revocations), rep.Certificates,
		rep.From.Format(time.RFC3339), rep.To.Format(time.RFC3339))
	for _, k := range reasons {
		fmt.Fprintf(out, "  %-22s %d\n", k, rep.ByReason[k])
	}
	if rep.Checkpoint != nil {
		fmt.Fprintf(out, "audit entries %d-%d are covered by signed checkpoint %d (%s, key %s): check with `trustamp audit verify`\n",
			rep.AuditFirstSeq, rep.AuditLastSeq, rep.Checkpoint.Seq, rep.Checkpoint.Time.UTC().Format(time.RFC3339), rep.Checkpoint.KeyID)
	}
	return nil
}

func printReportCSV(cmd *cobra.Command, rep revocation.Report) error {
	w := csv.NewWriter(cmd.OutOrStdout())
	header := make([]string, len(reportHeader))
	for i, h := range reportHeader {
		header[i] = strings.ToLower(strings.ReplaceAll(h, " ", "_"))
	}
	w.Write(header)
	for _, r := range rep.Revocations {
		w.Write(reportRow(r))
	}
	w.Flush()
	return w.Error()
}

func shortSerials(s []string) string {
	out := make([]string, len(s))
	for i, x := range s {
		out[i] = shortSerial(x)
	}
	return strings.Join(out, " ")
}
