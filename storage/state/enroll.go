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
	// RevokedAt is zero while the token is not revoked; RevokedBy is who
	// revoked it.
	RevokedAt time.Time
	RevokedBy string
}

// Usable reports whether the token may still enroll an agent at now.
func (t EnrollmentToken) Usable(now time.Time) bool {
	return t.Uses < t.MaxUses && now.Before(t.ExpiresAt) && t.RevokedAt.IsZero()
}

const enrollmentTokenColumns = `id, token_hash, labels, max_uses, uses, expires_at_us, created_at_us, created_by, revoked_at_us, revoked_by`

func scanEnrollmentToken(sc interface{ Scan(...any) error }) (EnrollmentToken, error) {
	var (
		t                EnrollmentToken
		labels           string
		expires, created int64
		revoked          sql.NullInt64
	)
	if err := sc.Scan(&t.ID, &t.Hash, &labels, &t.MaxUses, &t.Uses, &expires, &created, &t.CreatedBy, &revoked, &t.RevokedBy); err != nil {
		return EnrollmentToken{}, err
	}
	t.ExpiresAt, t.CreatedAt = fromMicros(expires), fromMicros(created)
	if revoked.Valid {
		t.RevokedAt = fromMicros(revoked.Int64)
	}
	if err := json.Unmarshal([]byte(labels), &t.Labels); err != nil {
		return EnrollmentToken{}, fmt.Errorf("state: enrollment token %s labels: %w", t.ID, err)
	}
	return t, nil
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
	t, err := scanEnrollmentToken(tx.queryRow(ctx, `SELECT `+enrollmentTokenColumns+` FROM enrollment_tokens WHERE token_hash = ?`, hash))
	if errors.Is(err, sql.ErrNoRows) {
		return EnrollmentToken{}, fmt.Errorf("enrollment token: %w", ErrNotFound)
	}
	if err != nil {
		return EnrollmentToken{}, fmt.Errorf("state: enrollment token: %w", err)
	}
	return t, nil
}

// EnrollmentTokenByID finds a token by its id, or ErrNotFound.
func (tx *Tx) EnrollmentTokenByID(ctx context.Context, id string) (EnrollmentToken, error) {
	t, err := scanEnrollmentToken(tx.queryRow(ctx, `SELECT `+enrollmentTokenColumns+` FROM enrollment_tokens WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return EnrollmentToken{}, fmt.Errorf("enrollment token %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return EnrollmentToken{}, fmt.Errorf("state: enrollment token %s: %w", id, err)
	}
	return t, nil
}

// EnrollmentTokens lists every token, newest first.
func (tx *Tx) EnrollmentTokens(ctx context.Context) ([]EnrollmentToken, error) {
	rows, err := tx.query(ctx, `SELECT `+enrollmentTokenColumns+` FROM enrollment_tokens ORDER BY created_at_us DESC, id`)
	if err != nil {
		return nil, fmt.Errorf("state: enrollment tokens: %w", err)
	}
	defer rows.Close()
	var out []EnrollmentToken
	for rows.Next() {
		t, err := scanEnrollmentToken(rows)
		if err != nil {
			return nil, fmt.Errorf("state: enrollment tokens: %w", err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("state: enrollment tokens: %w", err)
	}
	return out, nil
}

// RevokeEnrollmentToken revokes a token at now: no agent can enroll with
// it afterwards. A token already revoked is ErrConflict; an unknown one
// ErrNotFound.
func (tx *Tx) RevokeEnrollmentToken(ctx context.Context, id, by string, now time.Time) error {
	res, err := tx.exec(ctx, `UPDATE enrollment_tokens SET revoked_at_us = ?, revoked_by = ? WHERE id = ? AND revoked_at_us IS NULL`,
		micros(now), by, id)
	if err != nil {
		return fmt.Errorf("state: revoke enrollment token %s: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		if _, err := tx.EnrollmentTokenByID(ctx, id); err != nil {
			return err
		}
		return fmt.Errorf("enrollment token %s is revoked already: %w", id, ErrConflict)
	}
	return nil
}

// UseEnrollmentToken spends one use of a token, atomically: of two agents
// racing with the last use, one gets ErrConflict.
func (tx *Tx) UseEnrollmentToken(ctx context.Context, id string, now time.Time) error {
	res, err := tx.exec(ctx, `UPDATE enrollment_tokens SET uses = uses + 1
		WHERE id = ? AND uses < max_uses AND expires_at_us > ? AND revoked_at_us IS NULL`, id, micros(now))
	if err != nil {
		return fmt.Errorf("state: use enrollment token %s: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return fmt.Errorf("enrollment token %s is used up, expired or revoked: %w", id, ErrConflict)
	}
	return nil
}

func nonNilMap(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}
