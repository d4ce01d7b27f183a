package state

import (
	"context"
	"fmt"
	"time"
)

// RotationState is where a rotation is.
type RotationState string

// Rotation states.
const (
	// RotationPending: due, not yet acted on.
	RotationPending RotationState = "pending"
	// RotationRequested: the agent was asked (custom capability) for a CSR.
	RotationRequested RotationState = "requested"
	// RotationOffered: a new certificate was offered, not yet seen in use.
	RotationOffered RotationState = "offered"
	// RotationConfirmed: the agent connected with the new certificate.
	RotationConfirmed RotationState = "confirmed"
	// RotationStalled: not confirmed in time, or the agent reported FAILED;
	// retried with backoff.
	RotationStalled RotationState = "stalled"
	// RotationAwaitingAgent: the server cannot rotate this agent (no CSR
	// capability, server-made keys not allowed); it waits for the agent to
	// send a CSR itself.
	RotationAwaitingAgent RotationState = "awaiting-agent-renewal"
)

// OpenRotationStates are the states of a rotation that is not finished.
var OpenRotationStates = []RotationState{RotationPending, RotationRequested, RotationOffered, RotationStalled, RotationAwaitingAgent}

func openStateArgs() []any {
	out := make([]any, len(OpenRotationStates))
	for i, s := range OpenRotationStates {
		out[i] = string(s)
	}
	return out
}

// Rotation replaces one agent's OpAMP certificate.
type Rotation struct {
	ID      string
	BatchID string // operator batch, or "" for scheduled and agent-initiated ones
	UID     string
	// Destination is "opamp" (the OpAMP connection) or a configured other
	// destination. Empty means "opamp".
	Destination string
	Reason      string // "scheduled", "operator", "agent"
	State       RotationState
	// Method is how the new key is obtained: "csr-request", "server-key",
	// "agent-csr", or "" before dispatch.
	Method        string
	Serial        string // the offered certificate
	Attempts      int
	NextAttemptAt time.Time
	CreatedAt     time.Time
	UpdatedAt     time.Time
	Error         string
}

const rotationColumns = `id, batch_id, uid, destination, reason, state, method, serial, attempts, next_attempt_us, created_at_us, updated_at_us, error`

// PutRotation inserts or replaces a rotation.
func (tx *Tx) PutRotation(ctx context.Context, r Rotation) error {
	if r.Destination == "" {
		r.Destination = "opamp"
	}
	_, err := tx.exec(ctx, `INSERT INTO rotations (`+rotationColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET state = excluded.state, method = excluded.method, serial = excluded.serial,
			attempts = excluded.attempts, next_attempt_us = excluded.next_attempt_us,
			updated_at_us = excluded.updated_at_us, error = excluded.error`,
		r.ID, r.BatchID, r.UID, r.Destination, r.Reason, string(r.State), r.Method, r.Serial, r.Attempts,
		microsOrZero(r.NextAttemptAt), micros(r.CreatedAt), micros(r.UpdatedAt), r.Error)
	if err != nil {
		return fmt.Errorf("state: put rotation %s: %w", r.ID, err)
	}
	return nil
}

// OpenRotation returns the agent's unfinished rotation for a destination
// ("" means "opamp"), or ErrNotFound.
func (tx *Tx) OpenRotation(ctx context.Context, uid, destination string) (Rotation, error) {
	if destination == "" {
		destination = "opamp"
	}
	rs, err := tx.rotations(ctx, "SELECT "+rotationColumns+" FROM rotations WHERE uid = ? AND destination = ? AND state IN ("+
		placeholders(len(OpenRotationStates))+") ORDER BY created_at_us LIMIT 1", append([]any{uid, destination}, openStateArgs()...)...)
	if err != nil {
		return Rotation{}, err
	}
	if len(rs) == 0 {
		return Rotation{}, fmt.Errorf("open %s rotation for %s: %w", destination, uid, ErrNotFound)
	}
	return rs[0], nil
}

// RotationBySerial returns the rotation that offered serial, or ErrNotFound.
func (tx *Tx) RotationBySerial(ctx context.Context, serial string) (Rotation, error) {
	rs, err := tx.rotations(ctx, "SELECT "+rotationColumns+" FROM rotations WHERE serial = ? LIMIT 1", serial)
	if err != nil {
		return Rotation{}, err
	}
	if len(rs) == 0 {
		return Rotation{}, fmt.Errorf("rotation for certificate %s: %w", serial, ErrNotFound)
	}
	return rs[0], nil
}

// DueRotations returns open rotations whose next attempt is due, for agents
// in uids (the agents connected to this replica), oldest first.
func (tx *Tx) DueRotations(ctx context.Context, now time.Time, limit int) ([]Rotation, error) {
	return tx.rotations(ctx, "SELECT "+rotationColumns+` FROM rotations
		WHERE state IN (?, ?, ?, ?) AND next_attempt_us <= ? ORDER BY next_attempt_us, created_at_us LIMIT `+fmt.Sprint(limit),
		string(RotationPending), string(RotationRequested), string(RotationOffered), string(RotationStalled), micros(now))
}

// BatchRotations returns the rotations of an operator batch.
func (tx *Tx) BatchRotations(ctx context.Context, batchID string) ([]Rotation, error) {
	return tx.rotations(ctx, "SELECT "+rotationColumns+" FROM rotations WHERE batch_id = ? ORDER BY uid", batchID)
}

// RotationCounts counts rotations by state.
func (tx *Tx) RotationCounts(ctx context.Context) (map[RotationState]int, error) {
	rows, err := tx.query(ctx, "SELECT state, COUNT(*) FROM rotations GROUP BY state")
	if err != nil {
		return nil, fmt.Errorf("state: count rotations: %w", err)
	}
	defer rows.Close()
	out := map[RotationState]int{}
	for rows.Next() {
		var (
			s string
			n int
		)
		if err := rows.Scan(&s, &n); err != nil {
			return nil, err
		}
		out[RotationState(s)] = n
	}
	return out, rows.Err()
}

func (tx *Tx) rotations(ctx context.Context, q string, args ...any) ([]Rotation, error) {
	rows, err := tx.query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("state: rotations: %w", err)
	}
	defer rows.Close()
	var out []Rotation
	for rows.Next() {
		var (
			r                      Rotation
			state                  string
			next, created, updated int64
		)
		if err := rows.Scan(&r.ID, &r.BatchID, &r.UID, &r.Destination, &r.Reason, &state, &r.Method, &r.Serial, &r.Attempts,
			&next, &created, &updated, &r.Error); err != nil {
			return nil, fmt.Errorf("state: rotations: %w", err)
		}
		r.State, r.NextAttemptAt = RotationState(state), timeOrZero(next)
		r.CreatedAt, r.UpdatedAt = fromMicros(created), fromMicros(updated)
		out = append(out, r)
	}
	return out, rows.Err()
}

// RotationBatch is an operator's request to rotate a set of agents.
type RotationBatch struct {
	ID          string
	RequestedBy string
	Selector    string
	Rate        float64 // rotations per second; 0 means the fleet default
	Total       int
	CreatedAt   time.Time
}

// InsertRotationBatch records a batch.
func (tx *Tx) InsertRotationBatch(ctx context.Context, b RotationBatch) error {
	_, err := tx.exec(ctx, `INSERT INTO rotation_batches (id, requested_by, selector, rate, total, created_at_us) VALUES (?, ?, ?, ?, ?, ?)`,
		b.ID, b.RequestedBy, b.Selector, b.Rate, b.Total, micros(b.CreatedAt))
	if err != nil {
		return fmt.Errorf("state: insert rotation batch %s: %w", b.ID, err)
	}
	return nil
}

// RotationBatch returns a batch, or ErrNotFound.
func (tx *Tx) RotationBatch(ctx context.Context, id string) (RotationBatch, error) {
	var (
		b       RotationBatch
		created int64
	)
	err := tx.queryRow(ctx, "SELECT id, requested_by, selector, rate, total, created_at_us FROM rotation_batches WHERE id = ?", id).
		Scan(&b.ID, &b.RequestedBy, &b.Selector, &b.Rate, &b.Total, &created)
	if isNoRows(err) {
		return RotationBatch{}, fmt.Errorf("rotation batch %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return RotationBatch{}, fmt.Errorf("state: rotation batch %s: %w", id, err)
	}
	b.CreatedAt = fromMicros(created)
	return b, nil
}
