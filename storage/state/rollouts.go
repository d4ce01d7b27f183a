package state

import (
	"context"
	"fmt"
	"time"
)

// ReleaseHalted: its rollout stopped on too many failures; agents already
// given it keep it, no other agent is offered it.
const ReleaseHalted ReleaseState = "halted"

// Pin assigns a version of a package type to the agents whose labels match
// Selector (canonical "k=v,k2=v2"); the empty selector is the type's default
// channel.
type Pin struct {
	Type     string
	Selector string
	Version  string
	PinnedAt time.Time
	PinnedBy string
}

// PutPin sets (or replaces) the pin of a type and selector.
func (tx *Tx) PutPin(ctx context.Context, p Pin) error {
	_, err := tx.exec(ctx, `INSERT INTO package_pins (type, selector, version, pinned_at_us, pinned_by) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (type, selector) DO UPDATE SET version = excluded.version, pinned_at_us = excluded.pinned_at_us,
		pinned_by = excluded.pinned_by`, p.Type, p.Selector, p.Version, micros(p.PinnedAt), p.PinnedBy)
	if err != nil {
		return fmt.Errorf("state: pin %s %q: %w", p.Type, p.Selector, err)
	}
	return nil
}

// DeletePin removes the pin of a type and selector, or ErrNotFound.
func (tx *Tx) DeletePin(ctx context.Context, typ, selector string) error {
	res, err := tx.exec(ctx, "DELETE FROM package_pins WHERE type = ? AND selector = ?", typ, selector)
	if err != nil {
		return fmt.Errorf("state: unpin %s %q: %w", typ, selector, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("pin %s %q: %w", typ, selector, ErrNotFound)
	}
	return nil
}

// Pins lists every pin, by type and selector.
func (tx *Tx) Pins(ctx context.Context) ([]Pin, error) {
	rows, err := tx.query(ctx, "SELECT type, selector, version, pinned_at_us, pinned_by FROM package_pins ORDER BY type, selector")
	if err != nil {
		return nil, fmt.Errorf("state: pins: %w", err)
	}
	defer rows.Close()
	var out []Pin
	for rows.Next() {
		var (
			p  Pin
			at int64
		)
		if err := rows.Scan(&p.Type, &p.Selector, &p.Version, &at, &p.PinnedBy); err != nil {
			return nil, fmt.Errorf("state: pins: %w", err)
		}
		p.PinnedAt = fromMicros(at)
		out = append(out, p)
	}
	return out, rows.Err()
}

// Rollout states of one agent's package.
const (
	PackageOffered     = "offered"
	PackageDownloading = "downloading"
	PackageInstalling  = "installing"
	PackageInstalled   = "installed"
	PackageFailed      = "failed"
)

// AgentPackage is what one agent was last offered for one package type and
// how far it got.
type AgentPackage struct {
	UID     string
	Type    string
	Version string
	SHA256  string
	State   string
	Message string // the agent's error message when failed
	// Rule says what set this target (a pin, a fallback after a yank).
	Rule string
	// Downgrade marks a deliberate move down from version From.
	Downgrade bool
	From      string
	OfferedAt time.Time
	UpdatedAt time.Time
}

const agentPackageColumns = "uid, type, version, sha256, state, message, rule, downgrade, from_version, offered_at_us, updated_at_us"

// PutAgentPackage records an offer or a status change.
func (tx *Tx) PutAgentPackage(ctx context.Context, p AgentPackage) error {
	down := 0
	if p.Downgrade {
		down = 1
	}
	_, err := tx.exec(ctx, `INSERT INTO agent_packages (`+agentPackageColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (uid, type) DO UPDATE SET version = excluded.version, sha256 = excluded.sha256, state = excluded.state,
		message = excluded.message, rule = excluded.rule, downgrade = excluded.downgrade, from_version = excluded.from_version,
		offered_at_us = excluded.offered_at_us, updated_at_us = excluded.updated_at_us`,
		p.UID, p.Type, p.Version, p.SHA256, p.State, p.Message, p.Rule, down, p.From, micros(p.OfferedAt), micros(p.UpdatedAt))
	if err != nil {
		return fmt.Errorf("state: agent %s package %s: %w", p.UID, p.Type, err)
	}
	return nil
}

// AgentPackages lists what agents were offered: of one agent when uid is
// set, of one release when typ and version are set.
func (tx *Tx) AgentPackages(ctx context.Context, uid, typ, version string) ([]AgentPackage, error) {
	q := "SELECT " + agentPackageColumns + " FROM agent_packages WHERE 1 = 1"
	var args []any
	for _, c := range []struct{ col, v string }{{"uid", uid}, {"type", typ}, {"version", version}} {
		if c.v != "" {
			q += " AND " + c.col + " = ?"
			args = append(args, c.v)
		}
	}
	rows, err := tx.query(ctx, q+" ORDER BY type, uid", args...)
	if err != nil {
		return nil, fmt.Errorf("state: agent packages: %w", err)
	}
	defer rows.Close()
	var out []AgentPackage
	for rows.Next() {
		var (
			p                AgentPackage
			down             int
			offered, updated int64
		)
		if err := rows.Scan(&p.UID, &p.Type, &p.Version, &p.SHA256, &p.State, &p.Message, &p.Rule, &down, &p.From, &offered, &updated); err != nil {
			return nil, fmt.Errorf("state: agent packages: %w", err)
		}
		p.Downgrade, p.OfferedAt, p.UpdatedAt = down != 0, fromMicros(offered), fromMicros(updated)
		out = append(out, p)
	}
	return out, rows.Err()
}

// RolloutStart is when a staged rollout of one release under one policy
// rule began.
type RolloutStart struct {
	Type, Version, Rule string
	StartedAt           time.Time
}

// StartRollout records that a rollout began at r.StartedAt unless it
// already had; it returns the start on record, which is the earlier one
// when another replica got there first.
func (tx *Tx) StartRollout(ctx context.Context, r RolloutStart) (RolloutStart, error) {
	_, err := tx.exec(ctx, `INSERT INTO rollout_starts (type, version, rule, started_at_us) VALUES (?, ?, ?, ?)
		ON CONFLICT (type, version, rule) DO NOTHING`, r.Type, r.Version, r.Rule, micros(r.StartedAt))
	if err != nil {
		return RolloutStart{}, fmt.Errorf("state: start rollout of %s %s: %w", r.Type, r.Version, err)
	}
	var us int64
	if err := tx.queryRow(ctx, "SELECT started_at_us FROM rollout_starts WHERE type = ? AND version = ? AND rule = ?",
		r.Type, r.Version, r.Rule).Scan(&us); err != nil {
		return RolloutStart{}, fmt.Errorf("state: start rollout of %s %s: %w", r.Type, r.Version, err)
	}
	r.StartedAt = fromMicros(us)
	return r, nil
}

// RolloutStarts lists every recorded rollout start.
func (tx *Tx) RolloutStarts(ctx context.Context) ([]RolloutStart, error) {
	rows, err := tx.query(ctx, "SELECT type, version, rule, started_at_us FROM rollout_starts ORDER BY type, version, rule")
	if err != nil {
		return nil, fmt.Errorf("state: rollout starts: %w", err)
	}
	defer rows.Close()
	var out []RolloutStart
	for rows.Next() {
		var (
			r  RolloutStart
			us int64
		)
		if err := rows.Scan(&r.Type, &r.Version, &r.Rule, &us); err != nil {
			return nil, fmt.Errorf("state: rollout starts: %w", err)
		}
		r.StartedAt = fromMicros(us)
		out = append(out, r)
	}
	return out, rows.Err()
}
