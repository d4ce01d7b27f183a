package state

import (
	"context"
	"database/sql"
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
	TokenID             string // the enrollment token it enrolled with
}

const agentColumns = `uid, labels, description, capabilities, health, effective_config_hash, package_statuses,
	connected, replica, remote_addr, transport, connected_since_us, last_seen_us, sequence_num,
	cert_serial, cert_not_after_us, enrolled_at_us, token_id`

// PutAgent inserts or replaces an agent's row.
func (tx *Tx) PutAgent(ctx context.Context, a Agent) error {
	labels, err := json.Marshal(nonNilMap(a.Labels))
	if err != nil {
		return fmt.Errorf("state: agent %s labels: %w", a.UID, err)
	}
	connected := 0
	if a.Connected {
		connected = 1
	}
	_, err = tx.exec(ctx, `INSERT INTO agents (`+agentColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (uid) DO UPDATE SET labels = excluded.labels, description = excluded.description,
			capabilities = excluded.capabilities, health = excluded.health,
			effective_config_hash = excluded.effective_config_hash, package_statuses = excluded.package_statuses,
			connected = excluded.connected, replica = excluded.replica, remote_addr = excluded.remote_addr,
			transport = excluded.transport, connected_since_us = excluded.connected_since_us,
			last_seen_us = excluded.last_seen_us, sequence_num = excluded.sequence_num,
			cert_serial = excluded.cert_serial, cert_not_after_us = excluded.cert_not_after_us,
			enrolled_at_us = excluded.enrolled_at_us, token_id = excluded.token_id`,
		a.UID, string(labels), jsonOrEmpty(a.Description), int64(a.Capabilities), jsonOrEmpty(a.Health),
		nonNil(a.EffectiveConfigHash), jsonOrEmpty(a.PackageStatuses), connected, a.Replica, a.RemoteAddr,
		a.Transport, microsOrZero(a.ConnectedSince), microsOrZero(a.LastSeen), int64(a.SequenceNum),
		a.CertSerial, microsOrZero(a.CertNotAfter), microsOrZero(a.EnrolledAt), a.TokenID)
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
			a                               Agent
			labels, desc, health, pkgs      string
			caps, seq                       int64
			connected                       int
			since, seen, notAfter, enrolled int64
		)
		if err := rows.Scan(&a.UID, &labels, &desc, &caps, &health, &a.EffectiveConfigHash, &pkgs,
			&connected, &a.Replica, &a.RemoteAddr, &a.Transport, &since, &seen, &seq,
			&a.CertSerial, &notAfter, &enrolled, &a.TokenID); err != nil {
			return nil, fmt.Errorf("state: agents: %w", err)
		}
		if err := json.Unmarshal([]byte(labels), &a.Labels); err != nil {
			return nil, fmt.Errorf("state: agent %s labels: %w", a.UID, err)
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

// CertStatus is where an issued certificate is in its life.
type CertStatus string

// Certificate statuses.
const (
	// CertOffered: recorded and sent, not yet seen in a handshake.
	CertOffered CertStatus = "offered"
	// CertConfirmed: the agent connected with it.
	CertConfirmed CertStatus = "confirmed"
)

// Certificate is an issued agent certificate, recorded before it is sent.
type Certificate struct {
	Serial      string
	UID         string
	NotBefore   time.Time
	NotAfter    time.Time
	Fingerprint string
	PEM         string
	Status      CertStatus
	IssuedAt    time.Time
	ConfirmedAt time.Time
}

// InsertCertificate records an issued certificate.
func (tx *Tx) InsertCertificate(ctx context.Context, c Certificate) error {
	_, err := tx.exec(ctx, `INSERT INTO certificates (serial, uid, not_before_us, not_after_us, fingerprint, pem, status, issued_at_us, confirmed_at_us)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, c.Serial, c.UID, micros(c.NotBefore), micros(c.NotAfter), c.Fingerprint, c.PEM,
		string(c.Status), micros(c.IssuedAt), microsOrZero(c.ConfirmedAt))
	if err != nil {
		return fmt.Errorf("state: insert certificate %s: %w", c.Serial, err)
	}
	return nil
}

// CertificateBySerial returns a certificate, or ErrNotFound.
func (tx *Tx) CertificateBySerial(ctx context.Context, serial string) (Certificate, error) {
	var (
		c                         Certificate
		status                    string
		nb, na, issued, confirmed int64
	)
	err := tx.queryRow(ctx, `SELECT serial, uid, not_before_us, not_after_us, fingerprint, pem, status, issued_at_us, confirmed_at_us
		FROM certificates WHERE serial = ?`, serial).Scan(&c.Serial, &c.UID, &nb, &na, &c.Fingerprint, &c.PEM, &status, &issued, &confirmed)
	if errors.Is(err, sql.ErrNoRows) {
		return Certificate{}, fmt.Errorf("certificate %s: %w", serial, ErrNotFound)
	}
	if err != nil {
		return Certificate{}, fmt.Errorf("state: certificate %s: %w", serial, err)
	}
	c.NotBefore, c.NotAfter, c.IssuedAt, c.ConfirmedAt = fromMicros(nb), fromMicros(na), fromMicros(issued), timeOrZero(confirmed)
	c.Status = CertStatus(status)
	return c, nil
}

// ConfirmCertificate marks an offered certificate confirmed. It reports
// whether it changed anything (false when already confirmed).
func (tx *Tx) ConfirmCertificate(ctx context.Context, serial string, now time.Time) (bool, error) {
	res, err := tx.exec(ctx, "UPDATE certificates SET status = ?, confirmed_at_us = ? WHERE serial = ? AND status = ?",
		string(CertConfirmed), micros(now), serial, string(CertOffered))
	if err != nil {
		return false, fmt.Errorf("state: confirm certificate %s: %w", serial, err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}
