package state

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// AuditRow is one stored audit entry. The audit package owns its meaning (how
// Hash is computed); this package only keeps the bytes exactly.
type AuditRow struct {
	Seq      int64
	Time     time.Time
	Actor    string
	Action   string
	Subject  string
	Details  string // canonical JSON, stored as text so no backend reformats it
	PrevHash []byte
	Hash     []byte
}

// CheckpointRow is a signed statement of the audit chain's head at Seq.
type CheckpointRow struct {
	Seq       int64
	HeadHash  []byte
	Time      time.Time
	KeyID     string
	Signature []byte
}

// AuditFilter selects entries for ScanAudit. The zero value selects all.
type AuditFilter struct {
	// FromSeq skips entries before this sequence number.
	FromSeq int64
	// Since skips entries recorded before this time.
	Since time.Time
}

// AuditHead returns the last entry's sequence number and hash, (0, nil) on an
// empty chain. In an Update it also takes the chain lock, so the caller can
// append seq+1 without another writer (on any replica) doing the same.
func (tx *Tx) AuditHead(ctx context.Context) (int64, []byte, error) {
	if tx.d.lockAuditChain != "" {
		if _, err := tx.exec(ctx, tx.d.lockAuditChain); err != nil {
			return 0, nil, fmt.Errorf("state: lock audit chain: %w", err)
		}
	}
	var (
		seq  int64
		hash []byte
	)
	err := tx.queryRow(ctx, "SELECT seq, hash FROM audit_entries ORDER BY seq DESC LIMIT 1").Scan(&seq, &hash)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil, nil
	}
	if err != nil {
		return 0, nil, fmt.Errorf("state: audit head: %w", err)
	}
	return seq, hash, nil
}

// InsertAuditEntry appends one entry. A second entry with the same Seq fails
// with ErrConflict.
func (tx *Tx) InsertAuditEntry(ctx context.Context, r AuditRow) error {
	_, err := tx.exec(ctx, `INSERT INTO audit_entries (seq, at_us, actor, action, subject, details, prev_hash, hash)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		r.Seq, micros(r.Time), r.Actor, r.Action, r.Subject, r.Details, nonNil(r.PrevHash), r.Hash)
	if err != nil {
		return fmt.Errorf("state: insert audit entry %d: %w", r.Seq, err)
	}
	return nil
}

// ScanAudit calls fn for each matching entry in sequence order, streaming so
// that exporting a long log does not hold it all in memory. An error from fn
// stops the scan and is returned.
func (tx *Tx) ScanAudit(ctx context.Context, f AuditFilter, fn func(AuditRow) error) error {
	since := int64(0)
	if !f.Since.IsZero() {
		since = micros(f.Since)
	}
	rows, err := tx.query(ctx, `SELECT seq, at_us, actor, action, subject, details, prev_hash, hash
		FROM audit_entries WHERE seq >= ? AND at_us >= ? ORDER BY seq`, f.FromSeq, since)
	if err != nil {
		return fmt.Errorf("state: scan audit: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			r  AuditRow
			at int64
		)
		if err := rows.Scan(&r.Seq, &at, &r.Actor, &r.Action, &r.Subject, &r.Details, &r.PrevHash, &r.Hash); err != nil {
			return fmt.Errorf("state: scan audit: %w", err)
		}
		r.Time = fromMicros(at)
		if err := fn(r); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("state: scan audit: %w", err)
	}
	return nil
}

// AuditEntry returns the entry at seq, or ErrNotFound.
func (tx *Tx) AuditEntry(ctx context.Context, seq int64) (AuditRow, error) {
	var (
		r  AuditRow
		at int64
	)
	err := tx.queryRow(ctx, `SELECT seq, at_us, actor, action, subject, details, prev_hash, hash
		FROM audit_entries WHERE seq = ?`, seq).Scan(&r.Seq, &at, &r.Actor, &r.Action, &r.Subject, &r.Details, &r.PrevHash, &r.Hash)
	if errors.Is(err, sql.ErrNoRows) {
		return AuditRow{}, fmt.Errorf("audit entry %d: %w", seq, ErrNotFound)
	}
	if err != nil {
		return AuditRow{}, fmt.Errorf("state: audit entry %d: %w", seq, err)
	}
	r.Time = fromMicros(at)
	return r, nil
}

// InsertCheckpoint records a signed checkpoint. One checkpoint per Seq.
func (tx *Tx) InsertCheckpoint(ctx context.Context, c CheckpointRow) error {
	_, err := tx.exec(ctx, `INSERT INTO audit_checkpoints (seq, head_hash, at_us, key_id, signature) VALUES (?, ?, ?, ?, ?)`,
		c.Seq, c.HeadHash, micros(c.Time), c.KeyID, c.Signature)
	if err != nil {
		return fmt.Errorf("state: insert checkpoint %d: %w", c.Seq, err)
	}
	return nil
}

// LatestCheckpoint returns the checkpoint with the highest Seq, or ErrNotFound.
func (tx *Tx) LatestCheckpoint(ctx context.Context) (CheckpointRow, error) {
	cs, err := tx.checkpoints(ctx, "SELECT seq, head_hash, at_us, key_id, signature FROM audit_checkpoints ORDER BY seq DESC LIMIT 1")
	if err != nil {
		return CheckpointRow{}, err
	}
	if len(cs) == 0 {
		return CheckpointRow{}, fmt.Errorf("latest checkpoint: %w", ErrNotFound)
	}
	return cs[0], nil
}

// Checkpoints returns every checkpoint at or after fromSeq, in order.
func (tx *Tx) Checkpoints(ctx context.Context, fromSeq int64) ([]CheckpointRow, error) {
	return tx.checkpoints(ctx, "SELECT seq, head_hash, at_us, key_id, signature FROM audit_checkpoints WHERE seq >= ? ORDER BY seq", fromSeq)
}

func (tx *Tx) checkpoints(ctx context.Context, q string, args ...any) ([]CheckpointRow, error) {
	rows, err := tx.query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("state: checkpoints: %w", err)
	}
	defer rows.Close()
	var out []CheckpointRow
	for rows.Next() {
		var (
			c  CheckpointRow
			at int64
		)
		if err := rows.Scan(&c.Seq, &c.HeadHash, &at, &c.KeyID, &c.Signature); err != nil {
			return nil, fmt.Errorf("state: checkpoints: %w", err)
		}
		c.Time = fromMicros(at)
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("state: checkpoints: %w", err)
	}
	return out, nil
}

// nonNil stores an empty hash as zero bytes rather than NULL (the column is
// NOT NULL and the first entry's prev_hash is empty).
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}
