package state

import (
	"context"
	"fmt"
	"time"
)

// CertRevoked is the status of a revoked certificate. A certificateHold
// that is undone restores the status it had before.
const CertRevoked CertStatus = "revoked"

// RotationCancelled ends a rotation whose agent was revoked.
const RotationCancelled RotationState = "cancelled"

// Revocation is the revocation of one certificate.
type Revocation struct {
	ID string
	// RequestID groups the certificates one operator request revoked.
	RequestID   string
	Serial      string
	UID         string
	Destination string
	// Reason is the RFC 5280 reason name, e.g. "keyCompromise".
	Reason string
	Note   string
	Actor  string
	// RequestedAt is when the request arrived; RevokedAt when it committed.
	RequestedAt time.Time
	RevokedAt   time.Time
	NotAfter    time.Time
	// PriorStatus is the certificate's status before, restored by an undo.
	PriorStatus CertStatus
	// AuditSeq is the audit entry that records it.
	AuditSeq int64
	// ChangeSeq orders revocations and undos, for replicas catching up.
	ChangeSeq int64
	// DisconnectedAt is when the last live connection using it was closed
	// (on any replica); zero when none was open.
	DisconnectedAt    time.Time
	DisconnectedConns int
	// Presented counts handshakes refused because they presented it.
	Presented       int
	LastPresentedAt time.Time
	UndoneAt        time.Time
	UndoneBy        string
	UndoNote        string
}

const revocationColumns = `id, request_id, serial, uid, destination, reason, note, actor, requested_at_us, revoked_at_us,
	not_after_us, prior_status, audit_seq, change_seq, disconnected_at_us, disconnected_conns, presented,
	last_presented_at_us, undone_at_us, undone_by, undo_note`

// Counter names.
const (
	CounterCRLNumber        = "crl_number"
	CounterRevocationChange = "revocation_change"
)

// NextCounter increments a counter and returns its new value. Inside an
// Update the row lock orders concurrent writers, on any replica.
func (tx *Tx) NextCounter(ctx context.Context, name string) (int64, error) {
	var v int64
	if err := tx.queryRow(ctx, "UPDATE counters SET value = value + 1 WHERE name = ? RETURNING value", name).Scan(&v); err != nil {
		if isNoRows(err) {
			return 0, fmt.Errorf("state: counter %s: %w", name, ErrNotFound)
		}
		return 0, fmt.Errorf("state: counter %s: %w", name, err)
	}
	return v, nil
}

// Counter reads a counter.
func (tx *Tx) Counter(ctx context.Context, name string) (int64, error) {
	var v int64
	if err := tx.queryRow(ctx, "SELECT value FROM counters WHERE name = ?", name).Scan(&v); err != nil {
		return 0, fmt.Errorf("state: counter %s: %w", name, err)
	}
	return v, nil
}

// RevokeCertificate marks r.Serial revoked and records r, with the next
// change sequence number (returned in the stored row). A certificate already
// revoked is ErrConflict; an unknown one ErrNotFound.
func (tx *Tx) RevokeCertificate(ctx context.Context, r Revocation) (Revocation, error) {
	cert, err := tx.CertificateBySerial(ctx, r.Serial)
	if err != nil {
		return Revocation{}, err
	}
	if cert.Status == CertRevoked {
		return Revocation{}, fmt.Errorf("certificate %s is already revoked: %w", r.Serial, ErrConflict)
	}
	if r.ChangeSeq, err = tx.NextCounter(ctx, CounterRevocationChange); err != nil {
		return Revocation{}, err
	}
	r.UID, r.Destination, r.NotAfter, r.PriorStatus = cert.UID, cert.Destination, cert.NotAfter, cert.Status
	if _, err := tx.exec(ctx, "UPDATE certificates SET status = ? WHERE serial = ?", string(CertRevoked), r.Serial); err != nil {
		return Revocation{}, fmt.Errorf("state: revoke %s: %w", r.Serial, err)
	}
	_, err = tx.exec(ctx, `INSERT INTO revocations (`+revocationColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		r.ID, r.RequestID, r.Serial, r.UID, r.Destination, r.Reason, r.Note, r.Actor, micros(r.RequestedAt),
		micros(r.RevokedAt), micros(r.NotAfter), string(r.PriorStatus), r.AuditSeq, r.ChangeSeq,
		microsOrZero(r.DisconnectedAt), r.DisconnectedConns, r.Presented, microsOrZero(r.LastPresentedAt),
		microsOrZero(r.UndoneAt), r.UndoneBy, r.UndoNote)
	if err != nil {
		return Revocation{}, fmt.Errorf("state: record revocation of %s: %w", r.Serial, err)
	}
	return r, nil
}

// RevocationInForce returns the revocation of serial that is not undone, or
// ErrNotFound.
func (tx *Tx) RevocationInForce(ctx context.Context, serial string) (Revocation, error) {
	rs, err := tx.revocations(ctx, "SELECT "+revocationColumns+" FROM revocations WHERE serial = ? AND undone_at_us = 0", serial)
	if err != nil {
		return Revocation{}, err
	}
	if len(rs) == 0 {
		return Revocation{}, fmt.Errorf("revocation of %s: %w", serial, ErrNotFound)
	}
	return rs[0], nil
}

// UndoRevocation lifts the revocation of serial in force and restores the
// certificate's prior status. Whether a reason may be undone is the
// caller's rule.
func (tx *Tx) UndoRevocation(ctx context.Context, serial, by, note string, now time.Time) (Revocation, error) {
	r, err := tx.RevocationInForce(ctx, serial)
	if err != nil {
		return Revocation{}, err
	}
	if r.ChangeSeq, err = tx.NextCounter(ctx, CounterRevocationChange); err != nil {
		return Revocation{}, err
	}
	r.UndoneAt, r.UndoneBy, r.UndoNote = now, by, note
	if _, err := tx.exec(ctx, "UPDATE revocations SET undone_at_us = ?, undone_by = ?, undo_note = ?, change_seq = ? WHERE id = ?",
		micros(now), by, note, r.ChangeSeq, r.ID); err != nil {
		return Revocation{}, fmt.Errorf("state: undo revocation of %s: %w", serial, err)
	}
	if _, err := tx.exec(ctx, "UPDATE certificates SET status = ? WHERE serial = ?", string(r.PriorStatus), serial); err != nil {
		return Revocation{}, fmt.Errorf("state: restore %s: %w", serial, err)
	}
	return r, nil
}

// RevocationChanges lists revocations revoked or undone after change
// sequence number after, in order: how a replica catches up.
func (tx *Tx) RevocationChanges(ctx context.Context, after int64, limit int) ([]Revocation, error) {
	return tx.revocations(ctx, "SELECT "+revocationColumns+
		" FROM revocations WHERE change_seq > ? ORDER BY change_seq LIMIT "+fmt.Sprint(limit), after)
}

// RevocationsRequested lists revocations requested in [from, to), oldest
// first: the compliance report.
func (tx *Tx) RevocationsRequested(ctx context.Context, from, to time.Time) ([]Revocation, error) {
	return tx.revocations(ctx, "SELECT "+revocationColumns+
		" FROM revocations WHERE requested_at_us >= ? AND requested_at_us < ? ORDER BY requested_at_us, request_id, serial",
		micros(from), micros(to))
}

// MarkDisconnected records that conns live connections using serial were
// closed at at; the latest close wins, across replicas.
func (tx *Tx) MarkDisconnected(ctx context.Context, serial string, at time.Time, conns int) error {
	_, err := tx.exec(ctx, `UPDATE revocations SET
		disconnected_at_us = CASE WHEN disconnected_at_us < ? THEN ? ELSE disconnected_at_us END,
		disconnected_conns = disconnected_conns + ?
		WHERE serial = ? AND undone_at_us = 0`, micros(at), micros(at), conns, serial)
	if err != nil {
		return fmt.Errorf("state: mark %s disconnected: %w", serial, err)
	}
	return nil
}

// MarkPresented counts n refused handshakes that presented serial, the last
// at at.
func (tx *Tx) MarkPresented(ctx context.Context, serial string, n int, at time.Time) error {
	_, err := tx.exec(ctx, `UPDATE revocations SET presented = presented + ?,
		last_presented_at_us = CASE WHEN last_presented_at_us < ? THEN ? ELSE last_presented_at_us END
		WHERE serial = ? AND undone_at_us = 0`, n, micros(at), micros(at), serial)
	if err != nil {
		return fmt.Errorf("state: mark %s presented: %w", serial, err)
	}
	return nil
}

func (tx *Tx) revocations(ctx context.Context, q string, args ...any) ([]Revocation, error) {
	rows, err := tx.query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("state: revocations: %w", err)
	}
	defer rows.Close()
	var out []Revocation
	for rows.Next() {
		var (
			r                                                         Revocation
			prior                                                     string
			requested, revoked, notAfter, disc, lastPresented, undone int64
		)
		if err := rows.Scan(&r.ID, &r.RequestID, &r.Serial, &r.UID, &r.Destination, &r.Reason, &r.Note, &r.Actor,
			&requested, &revoked, &notAfter, &prior, &r.AuditSeq, &r.ChangeSeq, &disc, &r.DisconnectedConns,
			&r.Presented, &lastPresented, &undone, &r.UndoneBy, &r.UndoNote); err != nil {
			return nil, fmt.Errorf("state: revocations: %w", err)
		}
		r.RequestedAt, r.RevokedAt, r.NotAfter = fromMicros(requested), fromMicros(revoked), fromMicros(notAfter)
		r.DisconnectedAt, r.LastPresentedAt, r.UndoneAt = timeOrZero(disc), timeOrZero(lastPresented), timeOrZero(undone)
		r.PriorStatus = CertStatus(prior)
		out = append(out, r)
	}
	return out, rows.Err()
}

// Quarantine holds an agent identity out of the fleet: it cannot enroll
// again or obtain certificates until released.
type Quarantine struct {
	UID       string
	Reason    string
	Note      string
	Actor     string
	RequestID string
	Since     time.Time
}

// PutQuarantine quarantines q.UID; an existing quarantine is kept as it is.
// It reports whether the agent was newly quarantined.
func (tx *Tx) PutQuarantine(ctx context.Context, q Quarantine) (bool, error) {
	res, err := tx.exec(ctx, `INSERT INTO quarantine (uid, reason, note, actor, request_id, since_us)
		VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (uid) DO NOTHING`, q.UID, q.Reason, q.Note, q.Actor, q.RequestID, micros(q.Since))
	if err != nil {
		return false, fmt.Errorf("state: quarantine %s: %w", q.UID, err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// QuarantineOf returns uid's quarantine, or ErrNotFound.
func (tx *Tx) QuarantineOf(ctx context.Context, uid string) (Quarantine, error) {
	qs, err := tx.quarantines(ctx, "SELECT uid, reason, note, actor, request_id, since_us FROM quarantine WHERE uid = ?", uid)
	if err != nil {
		return Quarantine{}, err
	}
	if len(qs) == 0 {
		return Quarantine{}, fmt.Errorf("quarantine of %s: %w", uid, ErrNotFound)
	}
	return qs[0], nil
}

// Quarantines lists quarantined agents by uid.
func (tx *Tx) Quarantines(ctx context.Context) ([]Quarantine, error) {
	return tx.quarantines(ctx, "SELECT uid, reason, note, actor, request_id, since_us FROM quarantine ORDER BY uid")
}

// ReleaseQuarantine lifts uid's quarantine, or returns ErrNotFound.
func (tx *Tx) ReleaseQuarantine(ctx context.Context, uid string) (Quarantine, error) {
	q, err := tx.QuarantineOf(ctx, uid)
	if err != nil {
		return Quarantine{}, err
	}
	if _, err := tx.exec(ctx, "DELETE FROM quarantine WHERE uid = ?", uid); err != nil {
		return Quarantine{}, fmt.Errorf("state: release %s: %w", uid, err)
	}
	return q, nil
}

func (tx *Tx) quarantines(ctx context.Context, q string, args ...any) ([]Quarantine, error) {
	rows, err := tx.query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("state: quarantine: %w", err)
	}
	defer rows.Close()
	var out []Quarantine
	for rows.Next() {
		var (
			x     Quarantine
			since int64
		)
		if err := rows.Scan(&x.UID, &x.Reason, &x.Note, &x.Actor, &x.RequestID, &since); err != nil {
			return nil, fmt.Errorf("state: quarantine: %w", err)
		}
		x.Since = fromMicros(since)
		out = append(out, x)
	}
	return out, rows.Err()
}

// CancelRotations ends uid's open rotations (all destinations): a revoked
// agent gets no new certificate.
func (tx *Tx) CancelRotations(ctx context.Context, uid, why string, now time.Time) error {
	_, err := tx.exec(ctx, `UPDATE rotations SET state = ?, error = ?, updated_at_us = ?
		WHERE uid = ? AND state IN (`+placeholders(len(OpenRotationStates))+`)`,
		append([]any{string(RotationCancelled), why, micros(now), uid}, openStateArgs()...)...)
	if err != nil {
		return fmt.Errorf("state: cancel rotations of %s: %w", uid, err)
	}
	return nil
}

// CRL is an issuer's signed certificate revocation list.
type CRL struct {
	// Issuer is the issuing CA's subject key id, hex.
	Issuer     string
	Number     int64
	ThisUpdate time.Time
	NextUpdate time.Time
	Entries    int
	DER        []byte
}

// PutCRL stores c unless a CRL with a higher number is stored already (made
// by another replica meanwhile). It reports whether c was stored.
func (tx *Tx) PutCRL(ctx context.Context, c CRL) (bool, error) {
	res, err := tx.exec(ctx, `INSERT INTO crls (issuer, number, this_update_us, next_update_us, entries, der)
		VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (issuer) DO UPDATE SET number = excluded.number, this_update_us = excluded.this_update_us,
			next_update_us = excluded.next_update_us, entries = excluded.entries, der = excluded.der
		WHERE crls.number < excluded.number`,
		c.Issuer, c.Number, micros(c.ThisUpdate), micros(c.NextUpdate), c.Entries, c.DER)
	if err != nil {
		return false, fmt.Errorf("state: store CRL %d: %w", c.Number, err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// LatestCRL returns the issuer's stored CRL, or ErrNotFound.
func (tx *Tx) LatestCRL(ctx context.Context, issuer string) (CRL, error) {
	c := CRL{Issuer: issuer}
	var this, next int64
	err := tx.queryRow(ctx, "SELECT number, this_update_us, next_update_us, entries, der FROM crls WHERE issuer = ?", issuer).
		Scan(&c.Number, &this, &next, &c.Entries, &c.DER)
	if isNoRows(err) {
		return CRL{}, fmt.Errorf("CRL of %s: %w", issuer, ErrNotFound)
	}
	if err != nil {
		return CRL{}, fmt.Errorf("state: CRL of %s: %w", issuer, err)
	}
	c.ThisUpdate, c.NextUpdate = fromMicros(this), fromMicros(next)
	return c, nil
}

// CRLHead returns the number and thisUpdate of the issuer's stored CRL
// without its bytes, or ErrNotFound: what replicas poll.
func (tx *Tx) CRLHead(ctx context.Context, issuer string) (int64, time.Time, error) {
	var n, this int64
	err := tx.queryRow(ctx, "SELECT number, this_update_us FROM crls WHERE issuer = ?", issuer).Scan(&n, &this)
	if isNoRows(err) {
		return 0, time.Time{}, fmt.Errorf("CRL of %s: %w", issuer, ErrNotFound)
	}
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("state: CRL of %s: %w", issuer, err)
	}
	return n, fromMicros(this), nil
}

// RevokedSerial is the part of a revocation in force that the CRL and the
// handshake set need.
type RevokedSerial struct {
	Serial    string
	UID       string
	Reason    string
	RevokedAt time.Time
}

// RevokedSerials lists the revocations in force whose certificate has not
// expired at now: RevocationsInForce with only the columns a CRL of 100,000
// entries needs, read without building full rows.
func (tx *Tx) RevokedSerials(ctx context.Context, now time.Time) ([]RevokedSerial, error) {
	rows, err := tx.query(ctx, `SELECT serial, uid, reason, revoked_at_us FROM revocations
		WHERE undone_at_us = 0 AND not_after_us > ?`, micros(now))
	if err != nil {
		return nil, fmt.Errorf("state: revoked serials: %w", err)
	}
	defer rows.Close()
	var out []RevokedSerial
	for rows.Next() {
		var (
			r  RevokedSerial
			at int64
		)
		if err := rows.Scan(&r.Serial, &r.UID, &r.Reason, &at); err != nil {
			return nil, fmt.Errorf("state: revoked serials: %w", err)
		}
		r.RevokedAt = fromMicros(at)
		out = append(out, r)
	}
	return out, rows.Err()
}
