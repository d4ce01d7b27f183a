package state

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// CertStatus is where an issued certificate is in its life.
type CertStatus string

// Certificate statuses.
const (
	// CertOffered: recorded and sent, not yet seen in a handshake.
	CertOffered CertStatus = "offered"
	// CertConfirmed: the agent connected with it; the one in use.
	CertConfirmed CertStatus = "confirmed"
	// CertRetired: replaced by a confirmed successor. Still valid until it
	// expires (unless revoked), so a rollback never strands an agent.
	CertRetired CertStatus = "retired"
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
	RetiredAt   time.Time
	// Profile names the certificate profile it was issued under.
	Profile string
	// Destination is "opamp" for the OpAMP connection, or a named other
	// destination.
	Destination string
	// RenewAfter is when the scheduler rotates it (the profile's renew point,
	// with jitter).
	RenewAfter time.Time
	// OfferHash is the ConnectionSettingsOffers hash it was offered under.
	OfferHash []byte
	// ServerMadeKey is true when the server generated the key pair.
	ServerMadeKey bool
}

const certColumns = `serial, uid, not_before_us, not_after_us, fingerprint, pem, status, issued_at_us, confirmed_at_us,
	retired_at_us, profile, destination, renew_after_us, offer_hash, server_made_key`

// InsertCertificate records an issued certificate.
func (tx *Tx) InsertCertificate(ctx context.Context, c Certificate) error {
	if c.Destination == "" {
		c.Destination = "opamp"
	}
	serverKey := 0
	if c.ServerMadeKey {
		serverKey = 1
	}
	_, err := tx.exec(ctx, `INSERT INTO certificates (`+certColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		c.Serial, c.UID, micros(c.NotBefore), micros(c.NotAfter), c.Fingerprint, c.PEM, string(c.Status), micros(c.IssuedAt),
		microsOrZero(c.ConfirmedAt), microsOrZero(c.RetiredAt), c.Profile, c.Destination, microsOrZero(c.RenewAfter),
		nonNil(c.OfferHash), serverKey)
	if err != nil {
		return fmt.Errorf("state: insert certificate %s: %w", c.Serial, err)
	}
	return nil
}

// CertificateBySerial returns a certificate, or ErrNotFound.
func (tx *Tx) CertificateBySerial(ctx context.Context, serial string) (Certificate, error) {
	cs, err := tx.certificates(ctx, "SELECT "+certColumns+" FROM certificates WHERE serial = ?", serial)
	if err != nil {
		return Certificate{}, err
	}
	if len(cs) == 0 {
		return Certificate{}, fmt.Errorf("certificate %s: %w", serial, ErrNotFound)
	}
	return cs[0], nil
}

// CertFilter selects certificates. The zero value selects all.
type CertFilter struct {
	UID            string
	Statuses       []CertStatus
	ExpiringBefore time.Time
	// Limit caps the result; zero means no cap.
	Limit int
}

// Certificates lists certificates matching f, soonest expiry first.
func (tx *Tx) Certificates(ctx context.Context, f CertFilter) ([]Certificate, error) {
	q := "SELECT " + certColumns + " FROM certificates WHERE 1 = 1"
	var args []any
	if f.UID != "" {
		q += " AND uid = ?"
		args = append(args, f.UID)
	}
	if len(f.Statuses) > 0 {
		q += " AND status IN (" + placeholders(len(f.Statuses)) + ")"
		for _, s := range f.Statuses {
			args = append(args, string(s))
		}
	}
	if !f.ExpiringBefore.IsZero() {
		q += " AND not_after_us < ?"
		args = append(args, micros(f.ExpiringBefore))
	}
	q += " ORDER BY not_after_us, serial"
	if f.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	return tx.certificates(ctx, q, args...)
}

// CertificatesDue returns confirmed certificates past their renew point,
// still unexpired, with no open rotation for their agent and destination:
// the scheduler's work list.
func (tx *Tx) CertificatesDue(ctx context.Context, now time.Time, limit int) ([]Certificate, error) {
	return tx.certificates(ctx, "SELECT "+certColumns+` FROM certificates c
		WHERE status = ? AND renew_after_us > 0 AND renew_after_us <= ? AND not_after_us > ?
		AND NOT EXISTS (SELECT 1 FROM rotations r WHERE r.uid = c.uid AND r.destination = c.destination
			AND r.state IN (`+placeholders(len(OpenRotationStates))+`))
		ORDER BY renew_after_us LIMIT `+fmt.Sprint(limit),
		append([]any{string(CertConfirmed), micros(now), micros(now)}, openStateArgs()...)...)
}

// CertificateByOfferHash finds the agent's certificate offered under hash
// (how an agent's ConnectionSettingsStatus names an offer), or ErrNotFound.
func (tx *Tx) CertificateByOfferHash(ctx context.Context, uid string, hash []byte) (Certificate, error) {
	cs, err := tx.certificates(ctx, "SELECT "+certColumns+" FROM certificates WHERE uid = ? AND offer_hash = ? LIMIT 1", uid, hash)
	if err != nil {
		return Certificate{}, err
	}
	if len(cs) == 0 {
		return Certificate{}, fmt.Errorf("certificate offered to %s under %x: %w", uid, hash, ErrNotFound)
	}
	return cs[0], nil
}

// CertCounts counts certificates by status, for metrics.
func (tx *Tx) CertCounts(ctx context.Context, now time.Time) (map[CertStatus]int, time.Time, error) {
	rows, err := tx.query(ctx, "SELECT status, COUNT(*) FROM certificates WHERE not_after_us > ? GROUP BY status", micros(now))
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("state: count certificates: %w", err)
	}
	defer rows.Close()
	out := map[CertStatus]int{}
	for rows.Next() {
		var (
			s string
			n int
		)
		if err := rows.Scan(&s, &n); err != nil {
			return nil, time.Time{}, err
		}
		out[CertStatus(s)] = n
	}
	var soonest sql.NullInt64
	if err := tx.queryRow(ctx, "SELECT MIN(not_after_us) FROM certificates WHERE status = ? AND not_after_us > ?",
		string(CertConfirmed), micros(now)).Scan(&soonest); err != nil {
		return nil, time.Time{}, fmt.Errorf("state: soonest expiry: %w", err)
	}
	return out, timeOrZero(soonest.Int64), rows.Err()
}

// ConfirmCertificate marks an offered certificate confirmed and retires the
// agent's previous confirmed certificate for the same destination. It reports
// whether it changed anything (false when already confirmed).
func (tx *Tx) ConfirmCertificate(ctx context.Context, serial string, now time.Time) (bool, error) {
	res, err := tx.exec(ctx, "UPDATE certificates SET status = ?, confirmed_at_us = ? WHERE serial = ? AND status = ?",
		string(CertConfirmed), micros(now), serial, string(CertOffered))
	if err != nil {
		return false, fmt.Errorf("state: confirm certificate %s: %w", serial, err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return false, err
	}
	var uid, dest string
	if err := tx.queryRow(ctx, "SELECT uid, destination FROM certificates WHERE serial = ?", serial).Scan(&uid, &dest); err != nil {
		return false, fmt.Errorf("state: confirm certificate %s: %w", serial, err)
	}
	_, err = tx.exec(ctx, `UPDATE certificates SET status = ?, retired_at_us = ?
		WHERE uid = ? AND destination = ? AND status = ? AND serial <> ?`,
		string(CertRetired), micros(now), uid, dest, string(CertConfirmed), serial)
	if err != nil {
		return false, fmt.Errorf("state: retire predecessors of %s: %w", serial, err)
	}
	return true, nil
}

func (tx *Tx) certificates(ctx context.Context, q string, args ...any) ([]Certificate, error) {
	rows, err := tx.query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("state: certificates: %w", err)
	}
	defer rows.Close()
	var out []Certificate
	for rows.Next() {
		var (
			c                                             Certificate
			status                                        string
			nb, na, issued, confirmed, retired, renew, sk int64
		)
		if err := rows.Scan(&c.Serial, &c.UID, &nb, &na, &c.Fingerprint, &c.PEM, &status, &issued, &confirmed,
			&retired, &c.Profile, &c.Destination, &renew, &c.OfferHash, &sk); err != nil {
			return nil, fmt.Errorf("state: certificates: %w", err)
		}
		c.NotBefore, c.NotAfter, c.IssuedAt = fromMicros(nb), fromMicros(na), fromMicros(issued)
		c.ConfirmedAt, c.RetiredAt, c.RenewAfter = timeOrZero(confirmed), timeOrZero(retired), timeOrZero(renew)
		c.Status, c.ServerMadeKey = CertStatus(status), sk == 1
		out = append(out, c)
	}
	return out, rows.Err()
}

func placeholders(n int) string {
	if n <= 0 {
		return ""
	}
	b := make([]byte, 0, 2*n)
	for i := 0; i < n; i++ {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '?')
	}
	return string(b)
}

var errNoRows = sql.ErrNoRows

func isNoRows(err error) bool { return errors.Is(err, errNoRows) }
