package state

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// EnrollmentToken lets a new agent obtain its first certificate. Only the
// hash of its secret is stored.
type EnrollmentToken struct {
	ID        string
	Hash      []byte
	Labels    map[string]string // become the enrolled agent's labels
	MaxUses   int
	Uses      int
	ExpiresAt time.Time
	CreatedAt time.Time
	CreatedBy string
}

// Usable reports whether the token may still enroll an agent at now.
func (t EnrollmentToken) Usable(now time.Time) bool {
	return t.Uses < t.MaxUses && now.Before(t.ExpiresAt)
}

// InsertEnrollmentToken stores a new token.
func (tx *Tx) InsertEnrollmentToken(ctx context.Context, t EnrollmentToken) error {
	labels, err := json.Marshal(nonNilMap(t.Labels))
	if err != nil {
		return fmt.Errorf("state: enrollment token labels: %w", err)
	}
	_, err = tx.exec(ctx, `INSERT INTO enrollment_tokens (id, token_hash, labels, max_uses, uses, expires_at_us, created_at_us, created_by)
		VALUES (?, ?, ?, ?, 0, ?, ?, ?)`, t.ID, t.Hash, string(labels), t.MaxUses, micros(t.ExpiresAt), micros(t.CreatedAt), t.CreatedBy)
	if err != nil {
		return fmt.Errorf("state: insert enrollment token %s: %w", t.ID, err)
	}
	return nil
}

// EnrollmentTokenByHash finds a token by the hash of its secret, or ErrNotFound.
func (tx *Tx) EnrollmentTokenByHash(ctx context.Context, hash []byte) (EnrollmentToken, error) {
	var (
		t                EnrollmentToken
		labels           string
		expires, created int64
	)
	err := tx.queryRow(ctx, `SELECT id, token_hash, labels, max_uses, uses, expires_at_us, created_at_us, created_by
		FROM enrollment_tokens WHERE token_hash = ?`, hash).
		Scan(&t.ID, &t.Hash, &labels, &t.MaxUses, &t.Uses, &expires, &created, &t.CreatedBy)
	if errors.Is(err, sql.ErrNoRows) {
		return EnrollmentToken{}, fmt.Errorf("enrollment token: %w", ErrNotFound)
	}
	if err != nil {
		return EnrollmentToken{}, fmt.Errorf("state: enrollment token: %w", err)
	}
	t.ExpiresAt, t.CreatedAt = fromMicros(expires), fromMicros(created)
	if err := json.Unmarshal([]byte(labels), &t.Labels); err != nil {
		return EnrollmentToken{}, fmt.Errorf("state: enrollment token %s labels: %w", t.ID, err)
	}
	return t, nil
}

// UseEnrollmentToken spends one use of a token, atomically: of two agents
// racing with the last use, one gets ErrConflict.
func (tx *Tx) UseEnrollmentToken(ctx context.Context, id string, now time.Time) error {
	res, err := tx.exec(ctx, `UPDATE enrollment_tokens SET uses = uses + 1
		WHERE id = ? AND uses < max_uses AND expires_at_us > ?`, id, micros(now))
	if err != nil {
		return fmt.Errorf("state: use enrollment token %s: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return fmt.Errorf("enrollment token %s is used up or expired: %w", id, ErrConflict)
	}
	return nil
}

func nonNilMap(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}
