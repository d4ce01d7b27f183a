package revocation

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/trustamp/trustamp/audit"
	"github.com/trustamp/trustamp/storage/state"
)

// Report is the compliance report of revocations requested in [From, To).
type Report struct {
	From        time.Time      `json:"from"`
	To          time.Time      `json:"to"`
	Revocations []ReportRow    `json:"revocations"`
	ByReason    map[string]int `json:"totals_by_reason"`
	// Certificates counts revoked certificates (a row may hold several).
	Certificates int `json:"certificates"`
	// AuditFirstSeq and AuditLastSeq span the audit entries recording these
	// revocations; Checkpoint is the first signed checkpoint at or after
	// AuditLastSeq, so `trustamp audit verify` up to it proves them intact.
	AuditFirstSeq int64             `json:"audit_first_seq"`
	AuditLastSeq  int64             `json:"audit_last_seq"`
	Checkpoint    *audit.Checkpoint `json:"checkpoint,omitempty"`
}

// ReportRow is one revocation request as it concerned one agent: an agent
// revocation (all its certificates) or a single certificate's. An agent
// revoked when it had no unexpired certificate left revokes nothing and has
// no row; its agent.revoke audit entry and its quarantine are the record.
type ReportRow struct {
	RequestID   string    `json:"request_id"`
	UID         string    `json:"uid"`
	Serials     []string  `json:"serials"`
	Reason      string    `json:"reason"`
	Actor       string    `json:"actor"`
	Note        string    `json:"note"`
	RequestedAt time.Time `json:"requested_at"`
	RevokedAt   time.Time `json:"revoked_at"`
	// LastDisconnectAt is when the last live connection using one of the
	// serials was closed, on any replica; nil when none was connected.
	LastDisconnectAt *time.Time `json:"last_disconnect_at,omitempty"`
	// PropagationMillis is LastDisconnectAt - RequestedAt.
	PropagationMillis *float64 `json:"propagation_ms,omitempty"`
	ClosedConnections int      `json:"closed_connections"`
	// PresentedAfter counts handshakes refused later because they
	// presented one of the serials.
	PresentedAfter  int        `json:"presented_after"`
	LastPresentedAt *time.Time `json:"last_presented_at,omitempty"`
	UndoneAt        *time.Time `json:"undone_at,omitempty"`
	UndoneBy        string     `json:"undone_by,omitempty"`
	AuditSeq        int64      `json:"audit_seq"`
}

// Report builds the compliance report. When no signed checkpoint covers the
// period's last audit entry yet, it asks for one (a checkpoint only signs
// what is already in the chain), so the auditor never waits for the loop.
func (s *Service) Report(ctx context.Context, from, to time.Time) (Report, error) {
	if !from.Before(to) {
		return Report{}, fmt.Errorf("%w: report window %s to %s is empty", ErrInvalid, from.Format(time.RFC3339), to.Format(time.RFC3339))
	}
	rep := Report{From: from.UTC(), To: to.UTC(), ByReason: map[string]int{}, Revocations: []ReportRow{}}
	var rs []state.Revocation
	if err := s.cfg.Store.View(ctx, func(tx *state.Tx) (err error) {
		rs, err = tx.RevocationsRequested(ctx, from, to)
		return err
	}); err != nil {
		return Report{}, fmt.Errorf("report: %w", err)
	}
	rows := map[string]*ReportRow{}
	var order []string
	for _, r := range rs {
		key := r.RequestID + "/" + r.UID
		row, ok := rows[key]
		if !ok {
			row = &ReportRow{RequestID: r.RequestID, UID: r.UID, Reason: r.Reason, Actor: r.Actor, Note: r.Note,
				RequestedAt: r.RequestedAt, RevokedAt: r.RevokedAt, AuditSeq: r.AuditSeq}
			rows[key] = row
			order = append(order, key)
		}
		row.Serials = append(row.Serials, r.Serial)
		row.ClosedConnections += r.DisconnectedConns
		row.PresentedAfter += r.Presented
		row.LastDisconnectAt = later(row.LastDisconnectAt, r.DisconnectedAt)
		row.LastPresentedAt = later(row.LastPresentedAt, r.LastPresentedAt)
		row.UndoneAt = later(row.UndoneAt, r.UndoneAt)
		if r.UndoneBy != "" {
			row.UndoneBy = r.UndoneBy
		}
		rep.ByReason[r.Reason]++
		rep.Certificates++
		if rep.AuditFirstSeq == 0 || r.AuditSeq < rep.AuditFirstSeq {
			rep.AuditFirstSeq = r.AuditSeq
		}
		rep.AuditLastSeq = max(rep.AuditLastSeq, r.AuditSeq)
	}
	for _, key := range order {
		row := rows[key]
		if row.LastDisconnectAt != nil {
			ms := float64(row.LastDisconnectAt.Sub(row.RequestedAt).Microseconds()) / 1000
			row.PropagationMillis = &ms
		}
		sort.Strings(row.Serials)
		rep.Revocations = append(rep.Revocations, *row)
	}
	if rep.AuditLastSeq > 0 {
		cp, err := s.coveringCheckpoint(ctx, rep.AuditLastSeq)
		if err != nil {
			return Report{}, fmt.Errorf("report: %w", err)
		}
		rep.Checkpoint = &cp
	}
	return rep, nil
}

func (s *Service) coveringCheckpoint(ctx context.Context, seq int64) (audit.Checkpoint, error) {
	find := func() (audit.Checkpoint, error) {
		var cps []state.CheckpointRow
		if err := s.cfg.Store.View(ctx, func(tx *state.Tx) (err error) {
			cps, err = tx.Checkpoints(ctx, seq)
			return err
		}); err != nil {
			return audit.Checkpoint{}, err
		}
		if len(cps) == 0 {
			return audit.Checkpoint{}, state.ErrNotFound
		}
		c := cps[0]
		return audit.Checkpoint{Seq: c.Seq, HeadHash: c.HeadHash, Time: c.Time, KeyID: c.KeyID, Signature: c.Signature}, nil
	}
	cp, err := find()
	if !errors.Is(err, state.ErrNotFound) {
		return cp, err
	}
	if _, _, err := s.cfg.Audit.Checkpoint(ctx, s.cfg.Store); err != nil {
		return audit.Checkpoint{}, err
	}
	return find()
}

func later(cur *time.Time, t time.Time) *time.Time {
	if t.IsZero() || (cur != nil && !t.After(*cur)) {
		return cur
	}
	return &t
}
