package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Agent is one fleet member as the registry knows it. JSON-shaped fields are
// kept as JSON so the registry can carry OpAMP's open-ended descriptions.
type Agent struct {
	UID                 string
	Labels              map[string]string
	Description         json.RawMessage // identifying and non-identifying attributes
	Capabilities        uint64
	Health              json.RawMessage
	EffectiveConfigHash []byte
	PackageStatuses     json.RawMessage
	Connected           bool
	Replica             string
	RemoteAddr          string
	Transport           string // "websocket" or "http"
	ConnectedSince      time.Time
	LastSeen            time.Time
	SequenceNum         uint64
	CertSerial          string // the certificate the agent last connected with
	CertNotAfter        time.Time
	EnrolledAt          time.Time
	TokenID             string   // the enrollment token it enrolled with
	CustomCapabilities  []string // OpAMP custom capabilities it declared
}

// ErrTooLarge refuses an agent row whose JSON fields pass the registry's
// backstop limits: every row must stay readable and encodable by the
// listings whatever an agent sent (encoding/json refuses nesting deeper than
// 10,000). The OpAMP transport's configurable limits are far below these.
var ErrTooLarge = errors.New("state: agent record over the registry's limits")

const (
	// MaxAgentJSONBytes bounds each JSON field (description, health,
	// package statuses) of an agent row.
	MaxAgentJSONBytes = 4 << 20
	// MaxAgentJSONDepth bounds the nesting of each JSON field of an agent
	// row.
	MaxAgentJSONDepth = 128
)

// CheckAgentJSON applies the backstop limits to one JSON field of an agent
// row; readers use it too, for rows stored before the limits existed.
func CheckAgentJSON(uid, field string, b json.RawMessage) error {
	if len(b) > MaxAgentJSONBytes {
		return fmt.Errorf("%w: agent %s %s is %d bytes, over %d", ErrTooLarge, uid, field, len(b), MaxAgentJSONBytes)
	}
	if d := jsonDepth(b); d > MaxAgentJSONDepth {
		return fmt.Errorf("%w: agent %s %s nests over %d levels", ErrTooLarge, uid, field, MaxAgentJSONDepth)
	}
	return nil
}

// jsonDepth returns the deepest nesting of objects and arrays in b, which
// is JSON (brackets inside strings do not count).
func jsonDepth(b []byte) int {
	depth, deepest, inString, escaped := 0, 0, false, false
	for _, c := range b {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
			deepest = max(deepest, depth)
		case c == '}' || c == ']':
			depth--
		}
	}
	return deepest
}

const agentColumns = `uid, labels, description, capabilities, health, effective_config_hash, package_statuses,
	connected, replica, remote_addr, transport, connected_since_us, last_seen_us, sequence_num,
	cert_serial, cert_not_after_us, enrolled_at_us, token_id, custom_capabilities`

// PutAgent inserts or replaces an agent's row.
// It refuses (ErrTooLarge) a row whose JSON fields pass the backstop limits.
func (tx *Tx) PutAgent(ctx context.Context, a Agent) error {
	for field, b := range map[string]json.RawMessage{"description": a.Description, "health": a.Health, "package_statuses": a.PackageStatuses} {
		if err := CheckAgentJSON(a.UID, field, b); err != nil {
			return err
		}
	}
	labels, err := json.Marshal(nonNilMap(a.Labels))
	if err != nil {
		return fmt.Errorf("state: agent %s labels: %w", a.UID, err)
	}
	customCaps, err := json.Marshal(nonNilSlice(a.CustomCapabilities))
	if err != nil {
		return fmt.Errorf("state: agent %s custom capabilities: %w", a.UID, err)
	}
	connected := 0
	if a.Connected {
		connected = 1
	}
	_, err = tx.exec(ctx, `INSERT INTO agents (`+agentColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (uid) DO UPDATE SET labels = excluded.labels, description = excluded.description,
			capabilities = excluded.capabilities, health = excluded.health,
			effective_config_hash = excluded.effective_config_hash, package_statuses = excluded.package_statuses,
			connected = excluded.connected, replica = excluded.replica, remote_addr = excluded.remote_addr,
			transport = excluded.transport, connected_since_us = excluded.connected_since_us,
			last_seen_us = excluded.last_seen_us, sequence_num = excluded.sequence_num,
			cert_serial = excluded.cert_serial, cert_not_after_us = excluded.cert_not_after_us,
			enrolled_at_us = excluded.enrolled_at_us, token_id = excluded.token_id,
			custom_capabilities = excluded.custom_capabilities`,
		a.UID, string(labels), jsonOrEmpty(a.Description), int64(a.Capabilities), jsonOrEmpty(a.Health),
		nonNil(a.EffectiveConfigHash), jsonOrEmpty(a.PackageStatuses), connected, a.Replica, a.RemoteAddr,
		a.Transport, microsOrZero(a.ConnectedSince), microsOrZero(a.LastSeen), int64(a.SequenceNum),
		a.CertSerial, microsOrZero(a.CertNotAfter), microsOrZero(a.EnrolledAt), a.TokenID, string(customCaps))
	if err != nil {
		return fmt.Errorf("state: put agent %s: %w", a.UID, err)
	}
	return nil
}

// Agent returns one agent, or ErrNotFound.
func (tx *Tx) Agent(ctx context.Context, uid string) (Agent, error) {
	as, err := tx.agents(ctx, "SELECT "+agentColumns+" FROM agents WHERE uid = ?", uid)
	if err != nil {
		return Agent{}, err
	}
	if len(as) == 0 {
		return Agent{}, fmt.Errorf("agent %s: %w", uid, ErrNotFound)
	}
	return as[0], nil
}

// AgentFilter selects agents. The zero value selects all.
type AgentFilter struct {
	// Labels must all be present with these values.
	Labels map[string]string
	// Connected, when set, selects connected (true) or disconnected agents.
	Connected *bool
	// CertExpiringBefore, when set, selects agents whose current
	// certificate expires before it.
	CertExpiringBefore time.Time
}

// Agents lists agents matching f, ordered by uid.
func (tx *Tx) Agents(ctx context.Context, f AgentFilter) ([]Agent, error) {
	q := "SELECT " + agentColumns + " FROM agents WHERE 1 = 1"
	var args []any
	if f.Connected != nil {
		q += " AND connected = ?"
		if *f.Connected {
			args = append(args, 1)
		} else {
			args = append(args, 0)
		}
	}
	if !f.CertExpiringBefore.IsZero() {
		q += " AND cert_not_after_us > 0 AND cert_not_after_us < ?"
		args = append(args, micros(f.CertExpiringBefore))
	}
	all, err := tx.agents(ctx, q+" ORDER BY uid", args...)
	if err != nil || len(f.Labels) == 0 {
		return all, err
	}
	out := all[:0]
	for _, a := range all {
		match := true
		for k, v := range f.Labels {
			match = match && a.Labels[k] == v
		}
		if match {
			out = append(out, a)
		}
	}
	return out, nil
}

// DisconnectReplica marks every agent connected through replica as
// disconnected: at start, a replica's earlier connections are gone.
func (tx *Tx) DisconnectReplica(ctx context.Context, replica string) error {
	if _, err := tx.exec(ctx, "UPDATE agents SET connected = 0 WHERE replica = ?", replica); err != nil {
		return fmt.Errorf("state: disconnect replica %s: %w", replica, err)
	}
	return nil
}

func (tx *Tx) agents(ctx context.Context, q string, args ...any) ([]Agent, error) {
	rows, err := tx.query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("state: agents: %w", err)
	}
	defer rows.Close()
	var out []Agent
	for rows.Next() {
		var (
			a                                      Agent
			labels, desc, health, pkgs, customCaps string
			caps, seq                              int64
			connected                              int
			since, seen, notAfter, enrolled        int64
		)
		if err := rows.Scan(&a.UID, &labels, &desc, &caps, &health, &a.EffectiveConfigHash, &pkgs,
			&connected, &a.Replica, &a.RemoteAddr, &a.Transport, &since, &seen, &seq,
			&a.CertSerial, &notAfter, &enrolled, &a.TokenID, &customCaps); err != nil {
			return nil, fmt.Errorf("state: agents: %w", err)
		}
		if err := json.Unmarshal([]byte(labels), &a.Labels); err != nil {
			return nil, fmt.Errorf("state: agent %s labels: %w", a.UID, err)
		}
		if err := json.Unmarshal([]byte(customCaps), &a.CustomCapabilities); err != nil {
			return nil, fmt.Errorf("state: agent %s custom capabilities: %w", a.UID, err)
		}
		a.Description, a.Health, a.PackageStatuses = json.RawMessage(desc), json.RawMessage(health), json.RawMessage(pkgs)
		a.Capabilities, a.SequenceNum, a.Connected = uint64(caps), uint64(seq), connected == 1
		a.ConnectedSince, a.LastSeen = timeOrZero(since), timeOrZero(seen)
		a.CertNotAfter, a.EnrolledAt = timeOrZero(notAfter), timeOrZero(enrolled)
		out = append(out, a)
	}
	return out, rows.Err()
}

func jsonOrEmpty(b json.RawMessage) string {
	if len(b) == 0 {
		return "{}"
	}
	return string(b)
}

func microsOrZero(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return micros(t)
}

func timeOrZero(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return fromMicros(us)
}

func nonNilSlice(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// AgentCounts counts registered agents by transport and connection state,
// for metrics: plain-HTTP agents have no live connection to count.
func (tx *Tx) AgentCounts(ctx context.Context) (map[string]map[bool]int, error) {
	rows, err := tx.query(ctx, "SELECT transport, connected, COUNT(*) FROM agents GROUP BY transport, connected")
	if err != nil {
		return nil, fmt.Errorf("state: count agents: %w", err)
	}
	defer rows.Close()
	out := map[string]map[bool]int{}
	for rows.Next() {
		var (
			transport string
			connected int
			n         int
		)
		if err := rows.Scan(&transport, &connected, &n); err != nil {
			return nil, fmt.Errorf("state: count agents: %w", err)
		}
		if out[transport] == nil {
			out[transport] = map[bool]int{}
		}
		out[transport][connected == 1] += n
	}
	return out, rows.Err()
}
