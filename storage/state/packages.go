package state

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// Publisher is a trusted release signer: its public key and the package
// types it may publish.
type Publisher struct {
	Name      string
	PublicKey string // PEM
	KeyHint   string
	Types     []string // empty: every type
	AddedAt   time.Time
	AddedBy   string
	RemovedAt time.Time // zero while trusted
}

// PutPublisher adds a publisher; an existing name is ErrConflict.
func (tx *Tx) PutPublisher(ctx context.Context, p Publisher) error {
	types, err := json.Marshal(nonNilSlice(p.Types))
	if err != nil {
		return err
	}
	_, err = tx.exec(ctx, `INSERT INTO publishers (name, public_key, key_hint, types, added_at_us, added_by, removed_at_us)
		VALUES (?, ?, ?, ?, ?, ?, 0)`, p.Name, p.PublicKey, p.KeyHint, string(types), micros(p.AddedAt), p.AddedBy)
	if err != nil {
		return fmt.Errorf("state: add publisher %s: %w", p.Name, err)
	}
	return nil
}

// RemovePublisher stops trusting a publisher (kept for the record), or
// ErrNotFound.
func (tx *Tx) RemovePublisher(ctx context.Context, name string, now time.Time) error {
	res, err := tx.exec(ctx, "UPDATE publishers SET removed_at_us = ? WHERE name = ? AND removed_at_us = 0", micros(now), name)
	if err != nil {
		return fmt.Errorf("state: remove publisher %s: %w", name, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("publisher %s: %w", name, ErrNotFound)
	}
	return nil
}

// Publishers lists trusted publishers (removed ones too when all).
func (tx *Tx) Publishers(ctx context.Context, all bool) ([]Publisher, error) {
	q := "SELECT name, public_key, key_hint, types, added_at_us, added_by, removed_at_us FROM publishers"
	if !all {
		q += " WHERE removed_at_us = 0"
	}
	rows, err := tx.query(ctx, q+" ORDER BY name")
	if err != nil {
		return nil, fmt.Errorf("state: publishers: %w", err)
	}
	defer rows.Close()
	var out []Publisher
	for rows.Next() {
		var (
			p              Publisher
			types          string
			added, removed int64
		)
		if err := rows.Scan(&p.Name, &p.PublicKey, &p.KeyHint, &types, &added, &p.AddedBy, &removed); err != nil {
			return nil, fmt.Errorf("state: publishers: %w", err)
		}
		if err := json.Unmarshal([]byte(types), &p.Types); err != nil {
			return nil, fmt.Errorf("state: publisher %s types: %w", p.Name, err)
		}
		p.AddedAt, p.RemovedAt = fromMicros(added), timeOrZero(removed)
		out = append(out, p)
	}
	return out, rows.Err()
}

// ReleaseState is where a release is in its life.
type ReleaseState string

// Release states.
const (
	ReleaseActive ReleaseState = "active"
	// ReleaseYanked: withdrawn by an operator; never offered again.
	ReleaseYanked ReleaseState = "yanked"
	// ReleaseQuarantined: its stored blob no longer matched its hash.
	ReleaseQuarantined ReleaseState = "quarantined"
)

// Release is a published, signed agent build for one platform.
type Release struct {
	ID             string
	Type           string
	Version        string
	Platform       string
	SHA256         string
	Size           int64
	Signature      []byte // the Sigstore bundle
	Publisher      string
	PublishedAt    time.Time
	PublishedBy    string
	State          ReleaseState
	StateReason    string
	StateChangedAt time.Time
}

const releaseColumns = `id, type, version, platform, sha256, size, signature, publisher, published_at_us, published_by,
	state, state_reason, state_changed_at_us`

// InsertRelease records a release; the same type, version and platform
// again is ErrConflict.
func (tx *Tx) InsertRelease(ctx context.Context, r Release) error {
	_, err := tx.exec(ctx, `INSERT INTO releases (`+releaseColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		r.ID, r.Type, r.Version, r.Platform, r.SHA256, r.Size, r.Signature, r.Publisher, micros(r.PublishedAt),
		r.PublishedBy, string(r.State), r.StateReason, microsOrZero(r.StateChangedAt))
	if err != nil {
		return fmt.Errorf("state: record release %s %s %s: %w", r.Type, r.Version, r.Platform, err)
	}
	return nil
}

// ReleaseFilter selects releases; the zero value selects all.
type ReleaseFilter struct {
	Type, Version, Platform, SHA256 string
}

// Releases lists releases matching f, by type, platform and publication.
func (tx *Tx) Releases(ctx context.Context, f ReleaseFilter) ([]Release, error) {
	q := "SELECT " + releaseColumns + " FROM releases WHERE 1 = 1"
	var args []any
	for _, c := range []struct{ col, v string }{{"type", f.Type}, {"version", f.Version}, {"platform", f.Platform}, {"sha256", f.SHA256}} {
		if c.v != "" {
			q += " AND " + c.col + " = ?"
			args = append(args, c.v)
		}
	}
	rows, err := tx.query(ctx, q+" ORDER BY type, platform, published_at_us", args...)
	if err != nil {
		return nil, fmt.Errorf("state: releases: %w", err)
	}
	defer rows.Close()
	var out []Release
	for rows.Next() {
		var (
			r                Release
			state            string
			published, since int64
		)
		if err := rows.Scan(&r.ID, &r.Type, &r.Version, &r.Platform, &r.SHA256, &r.Size, &r.Signature, &r.Publisher,
			&published, &r.PublishedBy, &state, &r.StateReason, &since); err != nil {
			return nil, fmt.Errorf("state: releases: %w", err)
		}
		r.State, r.PublishedAt, r.StateChangedAt = ReleaseState(state), fromMicros(published), timeOrZero(since)
		out = append(out, r)
	}
	return out, rows.Err()
}

// SetReleaseState moves a release to state with a reason.
func (tx *Tx) SetReleaseState(ctx context.Context, id string, s ReleaseState, reason string, now time.Time) error {
	res, err := tx.exec(ctx, "UPDATE releases SET state = ?, state_reason = ?, state_changed_at_us = ? WHERE id = ?",
		string(s), reason, micros(now), id)
	if err != nil {
		return fmt.Errorf("state: release %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("release %s: %w", id, ErrNotFound)
	}
	return nil
}
