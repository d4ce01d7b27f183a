// Package revocation cuts agents off: it revokes certificates and
// quarantines identities in one audited transaction, closes the live
// connections that use them, keeps the in-memory set every handshake is
// checked against, and publishes what it knows as a CRL and through an OCSP
// responder. It also answers the auditor's question "what was revoked, by
// whom, and how fast did it take effect" (report.go).
//
// Several replicas share one store: a revocation made on one reaches the
// others through the store's change sequence (every replica polls it each
// SyncInterval), so none relies on a message that could be lost.
package revocation

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/trustamp/trustamp/audit"
	"github.com/trustamp/trustamp/storage/state"
)

// Errors callers translate at their edge.
var (
	// ErrInvalid means the request itself is wrong (unknown reason, nothing
	// to revoke, a final revocation asked to be undone).
	ErrInvalid = errors.New("revocation: invalid request")
	// ErrNotFound and ErrConflict are the store's: an unknown agent or
	// serial, a certificate already revoked.
	ErrNotFound = state.ErrNotFound
	ErrConflict = state.ErrConflict
)

// CA is what the service needs from the certificate authority.
type CA interface {
	SignCRL(entries []x509.RevocationListEntry, number int64, thisUpdate, nextUpdate time.Time) (der []byte, issuer string, err error)
	IssuerKeyID() string
	OCSPSigner(ctx context.Context) (issuer, cert *x509.Certificate, key crypto.Signer, err error)
}

// Connections closes live connections; the OpAMP server is one.
type Connections interface {
	// DisconnectCerts closes every live connection of each agent uid that
	// uses one of the given serials, and counts the closed ones per serial.
	DisconnectCerts(certs map[string][]string) map[string]int
}

// Config configures a Service.
type Config struct {
	Store *state.Store
	Audit *audit.Log
	CA    CA
	// CRLNextUpdate is the CRL's validity window (nextUpdate - thisUpdate);
	// a fresh CRL is made at least every half of it. Zero means 1h.
	CRLNextUpdate time.Duration
	// OCSPValidity is how long an OCSP response may be cached (its
	// nextUpdate). Zero means 1h.
	OCSPValidity time.Duration
	// SyncInterval is how often revocations made on other replicas are
	// picked up. Zero means 1s.
	SyncInterval time.Duration
	// Forward tells the external issuer that signed a certificate (by its
	// profile) that it is revoked, so the issuer's own CRL lists it too.
	// Nil means every certificate is trustamp's own.
	Forward func(ctx context.Context, serial, profile string) error
	Metrics *Metrics
	Logger  *slog.Logger
	// Clock returns the current time. Nil means time.Now.
	Clock func() time.Time
}

// Service revokes, undoes holds, releases quarantines and publishes the CRL.
type Service struct {
	cfg     Config
	log     *slog.Logger
	metrics *Metrics
	set     *set
	conns   atomic.Pointer[Connections]

	crl     atomic.Pointer[publishedCRL]
	crlMu   sync.Mutex // one CRL generation at a time in this process
	syncMu  sync.Mutex // one catch-up at a time
	lastSeq int64      // guarded by syncMu

	presentedMu sync.Mutex
	presented   map[string]presentation // flushed to the store by the sync loop
}

type presentation struct {
	n    int
	last time.Time
}

// New builds a Service; Load must run before it answers handshakes.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.Audit == nil || cfg.CA == nil {
		return nil, errors.New("revocation: Store, Audit and CA are required")
	}
	if cfg.CRLNextUpdate <= 0 {
		cfg.CRLNextUpdate = time.Hour
	}
	if cfg.OCSPValidity <= 0 {
		cfg.OCSPValidity = time.Hour
	}
	if cfg.SyncInterval <= 0 {
		cfg.SyncInterval = time.Second
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	return &Service{cfg: cfg, log: cfg.Logger, metrics: cfg.Metrics, set: newSet(), presented: map[string]presentation{}}, nil
}

// SetConnections tells the service how to close live connections. The
// OpAMP server needs the service to check handshakes and the service needs
// the server to cut connections, so one of them is wired after the other.
func (s *Service) SetConnections(c Connections) { s.conns.Store(&c) }

// Load rebuilds the handshake set from the store and makes sure a current
// CRL exists. It runs before the OpAMP listener accepts anything.
func (s *Service) Load(ctx context.Context) error {
	var (
		rs  []state.RevokedSerial
		seq int64
	)
	err := s.cfg.Store.View(ctx, func(tx *state.Tx) (err error) {
		if seq, err = tx.Counter(ctx, state.CounterRevocationChange); err != nil {
			return err
		}
		rs, err = tx.RevokedSerials(ctx, s.cfg.Clock())
		return err
	})
	if err != nil {
		return fmt.Errorf("revocation: load: %w", err)
	}
	s.set.replace(rs)
	s.syncMu.Lock()
	s.lastSeq = seq
	s.syncMu.Unlock()
	s.metrics.InForce.Set(float64(len(rs)))
	return s.refreshCRL(ctx)
}

// Revoked reports whether serial (lowercase hex) is revoked, and why: the
// handshake check.
func (s *Service) Revoked(serial string) (reason string, ok bool) {
	e, ok := s.set.lookup(serial)
	return e.reason, ok
}

// Presented counts a refused handshake that presented serial, for the
// report and metrics. The store is written by the sync loop, so a flood of
// handshakes costs no write each.
func (s *Service) Presented(serial string) {
	s.metrics.Presented.Inc()
	s.presentedMu.Lock()
	p := s.presented[serial]
	p.n++
	p.last = s.cfg.Clock()
	s.presented[serial] = p
	s.presentedMu.Unlock()
}

// Request asks to revoke agents (all their unexpired certificates, and a
// quarantine of the identity) and single certificates.
type Request struct {
	UIDs    []string
	Serials []string
	// Reason is an RFC 5280 reason name; required.
	Reason string
	Note   string
	// Actor is who asks, as recorded in the audit log ("security:alice").
	Actor string
}

// Revoked is one certificate a request revoked.
type RevokedCert struct {
	Serial      string    `json:"serial"`
	UID         string    `json:"uid"`
	Destination string    `json:"destination"`
	NotAfter    time.Time `json:"not_after"`
	Connections int       `json:"closed_connections"`
}

// Result is what a revocation did.
type Result struct {
	RequestID   string        `json:"request_id"`
	Reason      string        `json:"reason"`
	Revoked     []RevokedCert `json:"revoked"`
	Quarantined []string      `json:"quarantined"`
	RequestedAt time.Time     `json:"requested_at"`
	RevokedAt   time.Time     `json:"revoked_at"`
	// DisconnectedAt is when the last live connection was closed on this
	// replica; zero when none was open here.
	DisconnectedAt    *time.Time `json:"disconnected_at,omitempty"`
	ClosedConnections int        `json:"closed_connections"`
	// CRLNumber is the CRL that first lists the revocation; zero if making
	// it failed (the periodic regeneration retries).
	CRLNumber int64  `json:"crl_number"`
	CRLError  string `json:"crl_error,omitempty"`
	// ForwardErrors name revocations an external issuer (Vault PKI) was not
	// told about; trustamp's own refusal, CRL and OCSP hold regardless.
	ForwardErrors []string `json:"forward_errors,omitempty"`
}

// NormalizeSerial accepts a serial as hex, with or without colons or a 0x
// prefix, in any case, and returns the form the store keys on.
func NormalizeSerial(in string) (string, error) {
	h := strings.ToLower(strings.ReplaceAll(strings.TrimSpace(in), ":", ""))
	h = strings.TrimPrefix(h, "0x")
	n, ok := new(big.Int).SetString(h, 16)
	if !ok || n.Sign() <= 0 {
		return "", fmt.Errorf("%w: serial %q is not a positive hexadecimal number", ErrInvalid, in)
	}
	return hex.EncodeToString(n.Bytes()), nil
}

// Revoke revokes what req names in one transaction (all or nothing), with
// one audit entry per agent or certificate, then closes live connections
// using the revoked certificates and publishes a new CRL. It returns once
// the revocation is durable and in force on this replica.
func (s *Service) Revoke(ctx context.Context, req Request) (Result, error) {
	requested := s.cfg.Clock()
	if _, err := ReasonCode(req.Reason); err != nil {
		return Result{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if len(req.UIDs) == 0 && len(req.Serials) == 0 {
		return Result{}, fmt.Errorf("%w: name an agent uid, a serial or a selector", ErrInvalid)
	}
	if req.Actor == "" {
		return Result{}, fmt.Errorf("%w: no actor", ErrInvalid)
	}
	serials := make([]string, len(req.Serials))
	for i, in := range req.Serials {
		n, err := NormalizeSerial(in)
		if err != nil {
			return Result{}, err
		}
		serials[i] = n
	}
	res := Result{RequestID: uuid.Must(uuid.NewV7()).String(), Reason: req.Reason, RequestedAt: requested}
	var revs []state.Revocation
	err := s.cfg.Store.Update(ctx, func(tx *state.Tx) error {
		revs, res.Quarantined = nil, nil
		now := s.cfg.Clock()
		res.RevokedAt = now
		base := state.Revocation{RequestID: res.RequestID, Reason: req.Reason, Note: req.Note, Actor: req.Actor,
			RequestedAt: requested, RevokedAt: now}
		seen := map[string]bool{}
		for _, uid := range req.UIDs {
			if seen[uid] {
				continue
			}
			seen[uid] = true
			got, quarantined, err := s.revokeAgent(ctx, tx, uid, base, now)
			if err != nil {
				return err
			}
			revs = append(revs, got...)
			if quarantined {
				res.Quarantined = append(res.Quarantined, uid)
			}
		}
		for _, serial := range serials {
			if seen["serial:"+serial] {
				continue
			}
			seen["serial:"+serial] = true
			r, err := s.revokeSerial(ctx, tx, serial, base)
			if err != nil {
				return err
			}
			revs = append(revs, r)
		}
		return nil
	})
	if err != nil {
		return Result{}, fmt.Errorf("revoke: %w", err)
	}
	closed, at := s.enforce(ctx, revs, requested)
	for _, r := range revs {
		s.metrics.Revocations.WithLabelValues(r.Reason).Inc()
		res.Revoked = append(res.Revoked, RevokedCert{Serial: r.Serial, UID: r.UID, Destination: r.Destination,
			NotAfter: r.NotAfter, Connections: closed[r.Serial]})
		res.ClosedConnections += closed[r.Serial]
	}
	if res.ClosedConnections > 0 {
		res.DisconnectedAt = &at
	}
	s.log.Info("revoked", "request", res.RequestID, "reason", req.Reason, "actor", req.Actor,
		"certificates", len(revs), "quarantined", len(res.Quarantined), "closed_connections", res.ClosedConnections)
	res.ForwardErrors = s.forward(ctx, revs)
	if n, err := s.regenerateCRL(ctx); err != nil {
		res.CRLError = err.Error()
		s.log.Error("CRL after revocation", "request", res.RequestID, "err", err)
	} else {
		res.CRLNumber = n
	}
	return res, nil
}

// forward passes revocations on to the issuers that signed them.
func (s *Service) forward(ctx context.Context, revs []state.Revocation) []string {
	if s.cfg.Forward == nil {
		return nil
	}
	var errs []string
	for _, r := range revs {
		var cert state.Certificate
		err := s.cfg.Store.View(ctx, func(tx *state.Tx) (err error) {
			cert, err = tx.CertificateBySerial(ctx, r.Serial)
			return err
		})
		if err == nil {
			err = s.cfg.Forward(ctx, r.Serial, cert.Profile)
		}
		if err != nil {
			s.log.Error("revocation not forwarded to the certificate's issuer", "serial", r.Serial, "err", err)
			errs = append(errs, fmt.Sprintf("%s: %v", r.Serial, err))
		}
	}
	return errs
}

// revokeAgent revokes every unexpired, unrevoked certificate of uid,
// quarantines it and cancels its rotations.
func (s *Service) revokeAgent(ctx context.Context, tx *state.Tx, uid string, base state.Revocation, now time.Time) ([]state.Revocation, bool, error) {
	if _, err := tx.Agent(ctx, uid); err != nil {
		if errors.Is(err, state.ErrNotFound) {
			return nil, false, fmt.Errorf("agent %s is not enrolled: %w", uid, ErrNotFound)
		}
		return nil, false, err
	}
	certs, err := tx.Certificates(ctx, state.CertFilter{UID: uid})
	if err != nil {
		return nil, false, err
	}
	var serials []string
	for _, c := range certs {
		if c.Status != state.CertRevoked && c.NotAfter.After(now) {
			serials = append(serials, c.Serial)
		}
	}
	e, err := s.cfg.Audit.Append(ctx, tx, audit.Record{Actor: base.Actor, Action: "agent.revoke", Subject: uid,
		Details: map[string]any{"request_id": base.RequestID, "reason": base.Reason, "note": base.Note, "serials": nonNil(serials)}})
	if err != nil {
		return nil, false, err
	}
	var out []state.Revocation
	for _, serial := range serials {
		r := base
		r.ID, r.Serial, r.AuditSeq = uuid.Must(uuid.NewV7()).String(), serial, e.Seq
		stored, err := tx.RevokeCertificate(ctx, r)
		if err != nil {
			return nil, false, err
		}
		out = append(out, stored)
	}
	quarantined, err := tx.PutQuarantine(ctx, state.Quarantine{UID: uid, Reason: base.Reason, Note: base.Note,
		Actor: base.Actor, RequestID: base.RequestID, Since: now})
	if err != nil {
		return nil, false, err
	}
	if err := tx.CancelRotations(ctx, uid, "agent revoked ("+base.Reason+")", now); err != nil {
		return nil, false, err
	}
	return out, quarantined, nil
}

func (s *Service) revokeSerial(ctx context.Context, tx *state.Tx, serial string, base state.Revocation) (state.Revocation, error) {
	cert, err := tx.CertificateBySerial(ctx, serial)
	if err != nil {
		if errors.Is(err, state.ErrNotFound) {
			return state.Revocation{}, fmt.Errorf("no certificate with serial %s was issued here: %w", serial, ErrNotFound)
		}
		return state.Revocation{}, err
	}
	if cert.Status == state.CertRevoked {
		return state.Revocation{}, fmt.Errorf("certificate %s is already revoked: %w", serial, ErrConflict)
	}
	e, err := s.cfg.Audit.Append(ctx, tx, audit.Record{Actor: base.Actor, Action: "cert.revoke", Subject: serial,
		Details: map[string]any{"request_id": base.RequestID, "reason": base.Reason, "note": base.Note, "uid": cert.UID,
			"destination": cert.Destination}})
	if err != nil {
		return state.Revocation{}, err
	}
	r := base
	r.ID, r.Serial, r.AuditSeq = uuid.Must(uuid.NewV7()).String(), serial, e.Seq
	return tx.RevokeCertificate(ctx, r)
}

// enforce puts committed revocations into the handshake set, then closes
// the live connections that use them (in that order: a connection that
// registers meanwhile checks the set after registering, so none slips
// between the two), and records when they were closed.
func (s *Service) enforce(ctx context.Context, revs []state.Revocation, requested time.Time) (map[string]int, time.Time) {
	added := s.set.apply(revs)
	s.metrics.InForce.Set(float64(s.set.len()))
	var closed map[string]int
	if c := s.conns.Load(); c != nil && len(added) > 0 {
		closed = (*c).DisconnectCerts(added)
	}
	at := s.cfg.Clock()
	someClosed := false
	for _, n := range closed {
		someClosed = someClosed || n > 0
	}
	if !someClosed {
		return closed, at
	}
	s.metrics.Disconnect.Observe(at.Sub(requested).Seconds())
	err := s.cfg.Store.Update(context.WithoutCancel(ctx), func(tx *state.Tx) error {
		for serial, n := range closed {
			if n == 0 {
				continue
			}
			if err := tx.MarkDisconnected(ctx, serial, at, n); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		// The connections are closed and the revocation is in force; only
		// the report's latency figure is lost.
		s.log.Error("record disconnect time", "err", err)
	}
	return closed, at
}

// Undo lifts a certificateHold on serial; other reasons are final. When the
// hold came with an agent revocation and no other certificate of that
// request is still held, the agent's quarantine is lifted too, so the undo
// restores access as a whole.
func (s *Service) Undo(ctx context.Context, serial, actor, note string) (state.Revocation, error) {
	serial, err := NormalizeSerial(serial)
	if err != nil {
		return state.Revocation{}, err
	}
	var undone state.Revocation
	err = s.cfg.Store.Update(ctx, func(tx *state.Tx) error {
		r, err := tx.RevocationInForce(ctx, serial)
		if errors.Is(err, state.ErrNotFound) {
			return fmt.Errorf("certificate %s is not revoked: %w", serial, ErrNotFound)
		}
		if err != nil {
			return err
		}
		if r.Reason != Hold {
			return fmt.Errorf("%w: certificate %s was revoked for %s, which is final; only %s can be undone", ErrInvalid, serial, r.Reason, Hold)
		}
		now := s.cfg.Clock()
		if undone, err = tx.UndoRevocation(ctx, serial, actor, note, now); err != nil {
			return err
		}
		if _, err := s.cfg.Audit.Append(ctx, tx, audit.Record{Actor: actor, Action: "cert.revoke_undo", Subject: serial,
			Details: map[string]any{"uid": r.UID, "request_id": r.RequestID, "note": note}}); err != nil {
			return err
		}
		return s.releaseHeldQuarantine(ctx, tx, r, actor)
	})
	if err != nil {
		return state.Revocation{}, fmt.Errorf("undo revocation: %w", err)
	}
	s.set.apply([]state.Revocation{undone})
	s.metrics.InForce.Set(float64(s.set.len()))
	if _, err := s.regenerateCRL(ctx); err != nil {
		s.log.Error("CRL after undo", "serial", serial, "err", err)
	}
	return undone, nil
}

func (s *Service) releaseHeldQuarantine(ctx context.Context, tx *state.Tx, r state.Revocation, actor string) error {
	q, err := tx.QuarantineOf(ctx, r.UID)
	if errors.Is(err, state.ErrNotFound) {
		return nil
	}
	if err != nil || q.Reason != Hold || q.RequestID != r.RequestID {
		return err
	}
	held, err := tx.Certificates(ctx, state.CertFilter{UID: r.UID, Statuses: []state.CertStatus{state.CertRevoked}})
	if err != nil {
		return err
	}
	for _, c := range held {
		other, err := tx.RevocationInForce(ctx, c.Serial)
		if err == nil && other.RequestID == r.RequestID {
			return nil // another certificate of the same hold is still held
		}
	}
	if _, err := tx.ReleaseQuarantine(ctx, r.UID); err != nil {
		return err
	}
	_, err = s.cfg.Audit.Append(ctx, tx, audit.Record{Actor: actor, Action: "agent.release", Subject: r.UID,
		Details: map[string]any{"note": "certificate hold undone", "request_id": r.RequestID, "quarantined_since": q.Since.Format(time.RFC3339)}})
	return err
}

// Quarantine holds uid for review without revoking anything: it gets no
// new certificate and cannot enroll again until `agents release`, while
// the certificates it holds keep working (revoke them to cut it off).
// Audited; it reports false when uid was already quarantined.
func (s *Service) Quarantine(ctx context.Context, uid, reason, actor, note string) (bool, error) {
	if actor == "" {
		return false, fmt.Errorf("%w: no actor", ErrInvalid)
	}
	var fresh bool
	err := s.cfg.Store.Update(ctx, func(tx *state.Tx) (err error) {
		now := s.cfg.Clock()
		id := uuid.Must(uuid.NewV7()).String()
		fresh, err = tx.PutQuarantine(ctx, state.Quarantine{UID: uid, Reason: reason, Note: note, Actor: actor,
			RequestID: id, Since: now})
		if err != nil || !fresh {
			return err
		}
		if err := tx.CancelRotations(ctx, uid, "agent quarantined ("+reason+")", now); err != nil {
			return err
		}
		_, err = s.cfg.Audit.Append(ctx, tx, audit.Record{Actor: actor, Action: "agent.quarantine", Subject: uid,
			Details: map[string]any{"reason": reason, "note": note, "request_id": id}})
		return err
	})
	if err != nil {
		return false, fmt.Errorf("quarantine %s: %w", uid, err)
	}
	return fresh, nil
}

// Release lifts uid's quarantine: it may enroll again with a token. Its
// revoked certificates stay revoked.
func (s *Service) Release(ctx context.Context, uid, actor, note string) (state.Quarantine, error) {
	if strings.TrimSpace(note) == "" {
		return state.Quarantine{}, fmt.Errorf("%w: a release needs a note saying why", ErrInvalid)
	}
	var q state.Quarantine
	err := s.cfg.Store.Update(ctx, func(tx *state.Tx) (err error) {
		if q, err = tx.ReleaseQuarantine(ctx, uid); err != nil {
			if errors.Is(err, state.ErrNotFound) {
				return fmt.Errorf("agent %s is not quarantined: %w", uid, ErrNotFound)
			}
			return err
		}
		_, err = s.cfg.Audit.Append(ctx, tx, audit.Record{Actor: actor, Action: "agent.release", Subject: uid,
			Details: map[string]any{"note": note, "quarantine_reason": q.Reason, "request_id": q.RequestID,
				"quarantined_since": q.Since.Format(time.RFC3339)}})
		return err
	})
	if err != nil {
		return state.Quarantine{}, fmt.Errorf("release %s: %w", uid, err)
	}
	return q, nil
}

// Run keeps this replica current until ctx ends: revocations made
// elsewhere, presentation counts, and a CRL no older than half its window.
// tick is injected for tests; nil means a ticker at SyncInterval.
func (s *Service) Run(ctx context.Context, tick <-chan time.Time) error {
	if tick == nil {
		t := time.NewTicker(s.cfg.SyncInterval)
		defer t.Stop()
		tick = t.C
	}
	lastRebuild := s.cfg.Clock()
	for {
		select {
		case <-ctx.Done():
			s.flushPresented(context.WithoutCancel(ctx))
			return nil
		case <-tick:
		}
		if err := s.Sync(ctx); err != nil {
			s.log.Error("revocation sync", "err", err)
		}
		s.flushPresented(ctx)
		if err := s.refreshCRL(ctx); err != nil {
			s.log.Error("CRL refresh", "err", err)
		}
		// Expired certificates leave the handshake set now and then.
		if now := s.cfg.Clock(); now.Sub(lastRebuild) > 10*time.Minute {
			lastRebuild = now
			if err := s.rebuild(ctx); err != nil {
				s.log.Error("revocation set rebuild", "err", err)
			}
		}
	}
}

// Sync applies revocations and undos committed since the last one seen
// (made by any replica, this one included) and closes connections they cut.
func (s *Service) Sync(ctx context.Context) error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	for {
		var changes []state.Revocation
		err := s.cfg.Store.View(ctx, func(tx *state.Tx) (err error) {
			changes, err = tx.RevocationChanges(ctx, s.lastSeq, 1000)
			return err
		})
		if err != nil {
			return err
		}
		if len(changes) == 0 {
			return nil
		}
		s.lastSeq = changes[len(changes)-1].ChangeSeq
		var fresh []state.Revocation
		now := s.cfg.Clock()
		for _, r := range changes {
			if r.NotAfter.After(now) {
				fresh = append(fresh, r)
			}
		}
		// Latency for revocations seen here only through the feed is
		// measured from their commit.
		if len(fresh) > 0 {
			s.enforce(ctx, fresh, fresh[0].RevokedAt)
		}
		if len(changes) < 1000 {
			return nil
		}
	}
}

func (s *Service) rebuild(ctx context.Context) error {
	var rs []state.RevokedSerial
	err := s.cfg.Store.View(ctx, func(tx *state.Tx) (err error) {
		rs, err = tx.RevokedSerials(ctx, s.cfg.Clock())
		return err
	})
	if err != nil {
		return err
	}
	s.syncMu.Lock()
	s.set.replace(rs)
	s.syncMu.Unlock()
	s.metrics.InForce.Set(float64(len(rs)))
	return nil
}

func (s *Service) flushPresented(ctx context.Context) {
	s.presentedMu.Lock()
	pending := s.presented
	s.presented = map[string]presentation{}
	s.presentedMu.Unlock()
	if len(pending) == 0 {
		return
	}
	err := s.cfg.Store.Update(ctx, func(tx *state.Tx) error {
		for serial, p := range pending {
			if err := tx.MarkPresented(ctx, serial, p.n, p.last); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		s.log.Error("record revoked certificates presented", "err", err)
		s.presentedMu.Lock()
		for serial, p := range pending {
			q := s.presented[serial]
			q.n += p.n
			if p.last.After(q.last) {
				q.last = p.last
			}
			s.presented[serial] = q
		}
		s.presentedMu.Unlock()
	}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
