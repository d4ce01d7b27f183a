package state

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// AdminToken is an admin API credential. Only a hash of the secret is kept,
// so a copy of the database does not grant access.
type AdminToken struct {
	ID        string
	Name      string
	Role      string
	Hash      []byte
	CreatedAt time.Time
	CreatedBy string    // who minted it ("" for tokens minted before this was kept)
	RevokedAt time.Time // zero while the token is valid
	RevokedBy string
}

// InsertAdminToken stores a new token; a duplicate ID or hash is ErrConflict.
func (tx *Tx) InsertAdminToken(ctx context.Context, t AdminToken) error {
	_, err := tx.exec(ctx, `INSERT INTO admin_tokens (id, name, role, token_hash, created_at_us, created_by) VALUES (?, ?, ?, ?, ?, ?)`,
		t.ID, t.Name, t.Role, t.Hash, micros(t.CreatedAt), t.CreatedBy)
	if err != nil {
		return fmt.Errorf("state: insert admin token %s: %w", t.ID, err)
	}
	return nil
}

// AdminTokenByHash finds the token whose secret hashes to hash, or
// ErrNotFound. The lookup is by an index on a SHA-256 of a 256-bit secret, so
// its timing reveals nothing useful about other tokens.
func (tx *Tx) AdminTokenByHash(ctx context.Context, hash []byte) (AdminToken, error) {
	t, err := scanAdminToken(tx.queryRow(ctx, `SELECT `+adminTokenColumns+` FROM admin_tokens WHERE token_hash = ?`, hash))
	if errors.Is(err, sql.ErrNoRows) {
		return AdminToken{}, fmt.Errorf("admin token: %w", ErrNotFound)
	}
	if err != nil {
		return AdminToken{}, fmt.Errorf("state: admin token: %w", err)
	}
	return t, nil
}

const adminTokenColumns = `id, name, role, token_hash, created_at_us, created_by, revoked_at_us, revoked_by`

func scanAdminToken(sc interface{ Scan(...any) error }) (AdminToken, error) {
	var (
		t       AdminToken
		created int64
		revoked sql.NullInt64
	)
	if err := sc.Scan(&t.ID, &t.Name, &t.Role, &t.Hash, &created, &t.CreatedBy, &revoked, &t.RevokedBy); err != nil {
		return AdminToken{}, err
	}
	t.CreatedAt = fromMicros(created)
	if revoked.Valid {
		t.RevokedAt = fromMicros(revoked.Int64)
	}
	return t, nil
}

// AdminTokenByID finds a token by its id, or ErrNotFound.
func (tx *Tx) AdminTokenByID(ctx context.Context, id string) (AdminToken, error) {
	t, err := scanAdminToken(tx.queryRow(ctx, `SELECT `+adminTokenColumns+` FROM admin_tokens WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return AdminToken{}, fmt.Errorf("admin token %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return AdminToken{}, fmt.Errorf("state: admin token %s: %w", id, err)
	}
	return t, nil
}

// AdminTokens lists every admin token, newest first.
func (tx *Tx) AdminTokens(ctx context.Context) ([]AdminToken, error) {
	rows, err := tx.query(ctx, `SELECT `+adminTokenColumns+` FROM admin_tokens ORDER BY created_at_us DESC, id`)
	if err != nil {
		return nil, fmt.Errorf("state: admin tokens: %w", err)
	}
	defer rows.Close()
	var out []AdminToken
	for rows.Next() {
		t, err := scanAdminToken(rows)
		if err != nil {
			return nil, fmt.Errorf("state: admin tokens: %w", err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("state: admin tokens: %w", err)
	}
	return out, nil
}

// RevokeAdminToken revokes one token at now: it authenticates nothing
// afterwards. A token already revoked is ErrConflict; an unknown one
// ErrNotFound.
func (tx *Tx) RevokeAdminToken(ctx context.Context, id, by string, now time.Time) error {
	res, err := tx.exec(ctx, `UPDATE admin_tokens SET revoked_at_us = ?, revoked_by = ? WHERE id = ? AND revoked_at_us IS NULL`,
		micros(now), by, id)
	if err != nil {
		return fmt.Errorf("state: revoke admin token %s: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		if _, err := tx.AdminTokenByID(ctx, id); err != nil {
			return err
		}
		return fmt.Errorf("admin token %s is revoked already: %w", id, ErrConflict)
	}
	return nil
}

// CountAdminTokens counts tokens that are not revoked; init uses it to decide
// whether a first admin token must be minted.
func (tx *Tx) CountAdminTokens(ctx context.Context) (int, error) {
	var n int
	if err := tx.queryRow(ctx, "SELECT COUNT(*) FROM admin_tokens WHERE revoked_at_us IS NULL").Scan(&n); err != nil {
		return 0, fmt.Errorf("state: count admin tokens: %w", err)
	}
	return n, nil
}

// Meta returns the value stored under key, or ErrNotFound.
func (tx *Tx) Meta(ctx context.Context, key string) (string, error) {
	var v string
	err := tx.queryRow(ctx, "SELECT value FROM meta WHERE key = ?", key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("meta %s: %w", key, ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("state: meta %s: %w", key, err)
	}
	return v, nil
}

// SetMeta stores value under key, replacing any previous value.
func (tx *Tx) SetMeta(ctx context.Context, key, value string) error {
	_, err := tx.exec(ctx, `INSERT INTO meta (key, value) VALUES (?, ?)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, value)
	if err != nil {
		return fmt.Errorf("state: set meta %s: %w", key, err)
	}
	return nil
}

// RevokeAdminTokensNamed revokes every valid token with this name and
// reports how many; serve uses it to replace its local CLI credential.
func (tx *Tx) RevokeAdminTokensNamed(ctx context.Context, name string, now time.Time) (int, error) {
	res, err := tx.exec(ctx, "UPDATE admin_tokens SET revoked_at_us = ? WHERE name = ? AND revoked_at_us IS NULL", micros(now), name)
	if err != nil {
		return 0, fmt.Errorf("state: revoke admin tokens %s: %w", name, err)
	}
	n, err := res.RowsAffected()
	return int(n), err
}
