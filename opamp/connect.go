package opamp

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/open-telemetry/opamp-go/server/types"
	"golang.org/x/time/rate"

	"github.com/trustamp/trustamp/audit"
	"github.com/trustamp/trustamp/policies"
	"github.com/trustamp/trustamp/storage/state"
	"github.com/trustamp/trustamp/tokens"
)

// Refusal reasons, as metric labels and in audit details.
const (
	reasonNoCredentials  = "no_credentials"
	reasonBadCertificate = "bad_certificate"
	reasonUnknownCert    = "unknown_certificate"
	reasonUnknownToken   = "unknown_token"
	reasonTokenUsed      = "token_used"
	reasonTokenExpired   = "token_expired"
	reasonTokenRevoked   = "token_revoked"
	reasonOverloaded     = "overloaded"
	reasonImpersonation  = "impersonation"
	reasonCSRRefused     = "csr_refused"
	reasonCSRRate        = "csr_rate_limited"
	reasonStateError     = "state_unavailable"
	reasonRevoked        = "revoked_certificate"
	reasonQuarantined    = "quarantined"
	reasonTooLarge       = "message_too_large"
	reasonOverLimit      = "message_over_limit"
	reasonReadTimeout    = "read_timeout"
	reasonEnrollTimeout  = "enroll_timeout"
)

// onConnecting decides who may connect: (a) a valid trustamp client
// certificate that the state store knows, (b) without one, a usable
// enrollment token as a bearer token, (c) nobody else: 401.
func (s *Server) onConnecting(r *http.Request) types.ConnectionResponse {
	ctx := r.Context()
	base := connInfo{transport: transportOf(r), remote: r.RemoteAddr, host: r.Host, since: s.cfg.Clock()}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		c, reason, err := s.authenticateCert(ctx, r.TLS.PeerCertificates, base)
		if err != nil {
			return s.refuse(r, reason, err)
		}
		return accept(c)
	}
	secret, ok := bearer(r)
	if !ok {
		return s.refuse(r, reasonNoCredentials, errors.New("no client certificate and no bearer token"))
	}
	var tok state.EnrollmentToken
	err := s.cfg.Store.View(ctx, func(tx *state.Tx) (err error) {
		tok, err = tx.EnrollmentTokenByHash(ctx, tokens.Hash(secret))
		return err
	})
	switch {
	case errors.Is(err, state.ErrNotFound):
		return s.refuse(r, reasonUnknownToken, errors.New("unknown enrollment token"))
	case err != nil:
		return s.unavailable(r, base, err)
	case !tok.RevokedAt.IsZero():
		return s.refuse(r, reasonTokenRevoked, fmt.Errorf("enrollment token %s was revoked at %s", tok.ID, tok.RevokedAt.Format(time.RFC3339)))
	case tok.Uses >= tok.MaxUses:
		return s.refuse(r, reasonTokenUsed, fmt.Errorf("enrollment token %s is used up", tok.ID))
	case !s.cfg.Clock().Before(tok.ExpiresAt):
		return s.refuse(r, reasonTokenExpired, fmt.Errorf("enrollment token %s expired at %s", tok.ID, tok.ExpiresAt.Format(time.RFC3339)))
	}
	if base.transport == transportWebSocket {
		// A WebSocket takes an enrollment slot only while its CSR is being
		// handled (enrollingMessage), so an idle or slow socket holds none;
		// enroll_timeout closes it.
		return accept(&conn{s: s, connInfo: base, kind: kindEnrolling, token: tok})
	}
	// A plain-HTTP request reaches here with its body already read
	// (servePlainHTTP), so the slot is held only while it is handled.
	release, ok := s.acquireEnroll()
	if !ok {
		s.metrics.Rejected.WithLabelValues(reasonOverloaded).Inc()
		return s.overloaded()
	}
	return accept(&conn{s: s, connInfo: base, kind: kindEnrolling, token: tok, release: release})
}

// authenticateCert accepts a chain that verifies to our CA, names an agent,
// and matches a certificate the store recorded for that agent. An offered
// certificate seen for the first time is confirmed, with its audit entry.
func (s *Server) authenticateCert(ctx context.Context, chain []*x509.Certificate, base connInfo) (*conn, string, error) {
	uid, serial, reason, err := s.checkAgentChain(chain)
	if err != nil {
		return nil, reason, err
	}
	var confirmed bool
	err = s.cfg.Store.Update(ctx, func(tx *state.Tx) error {
		rec, err := tx.CertificateBySerial(ctx, serial)
		if err != nil {
			return err
		}
		if rec.UID != uid.String() {
			return fmt.Errorf("certificate %s was issued to %s, not %s: %w", serial, rec.UID, uid, state.ErrNotFound)
		}
		if rec.Status != state.CertOffered {
			return nil
		}
		if confirmed, err = tx.ConfirmCertificate(ctx, serial, s.cfg.Clock()); err != nil || !confirmed {
			return err
		}
		if err := s.confirmRotation(ctx, tx, serial); err != nil {
			return err
		}
		_, err = s.cfg.Audit.Append(ctx, tx, audit.Record{
			Actor: "agent:" + uid.String(), Action: "cert.confirm", Subject: serial,
			Details: map[string]any{"uid": uid.String(), "not_after": rec.NotAfter.Format(time.RFC3339), "remote_addr": base.remote},
		})
		return err
	})
	if errors.Is(err, state.ErrNotFound) {
		return nil, reasonUnknownCert, fmt.Errorf("certificate %s for %s is not in the store: %w", serial, uid, err)
	}
	if err != nil {
		return nil, reasonStateError, err
	}
	return &conn{s: s, connInfo: base, kind: kindAgent, uid: uid, uidSet: true,
		certSerial: serial, certNotAfter: chain[0].NotAfter}, "", nil
}

// checkAgentChain verifies a presented chain to the CA and checks its leaf
// against the revocation set, which is in memory: a revoked certificate is
// refused before any database work. It returns the agent uid and the leaf's
// serial, or the refusal reason with the error.
func (s *Server) checkAgentChain(chain []*x509.Certificate) (uuid.UUID, string, string, error) {
	uid, err := s.cfg.CA.VerifyAgent(chain)
	if err != nil {
		return uuid.Nil, "", reasonBadCertificate, err
	}
	serial := hex.EncodeToString(chain[0].SerialNumber.Bytes())
	if why, revoked := s.revoked(serial); revoked {
		s.cfg.Revocations.Presented(serial)
		s.eventByUID(context.Background(), uid.String(), policies.EventRevokedPresented, map[string]string{"serial": serial, "reason": why})
		return uuid.Nil, serial, reasonRevoked, fmt.Errorf("certificate %s of %s is revoked (%s)", serial, uid, why)
	}
	return uid, serial, "", nil
}

func accept(c *conn) types.ConnectionResponse {
	return types.ConnectionResponse{Accept: true, ConnectionCallbacks: c.callbacks()}
}

// refuse answers 401 (the spec's answer to an authentication failure) and
// audits the attempt, rate-limited.
func (s *Server) refuse(r *http.Request, reason string, err error) types.ConnectionResponse {
	s.metrics.Rejected.WithLabelValues(reason).Inc()
	s.log.Info("opamp connection refused", "reason", reason, "remote", r.RemoteAddr, "err", err)
	s.refusals.record(r.Context(), refusal{reason: reason, remote: r.RemoteAddr, detail: err.Error()})
	return types.ConnectionResponse{
		Accept:             false,
		HTTPStatusCode:     http.StatusUnauthorized,
		HTTPResponseHeader: map[string]string{"WWW-Authenticate": `Bearer realm="trustamp"`},
	}
}

// unavailable answers a failure of ours (the store is down): 503, retry.
func (s *Server) unavailable(r *http.Request, base connInfo, err error) types.ConnectionResponse {
	s.metrics.Rejected.WithLabelValues(reasonStateError).Inc()
	s.log.Error("opamp connection failed", "remote", r.RemoteAddr, "err", err)
	return types.ConnectionResponse{
		Accept:             false,
		HTTPStatusCode:     http.StatusServiceUnavailable,
		HTTPResponseHeader: map[string]string{"Retry-After": strconv.Itoa(int(s.cfg.EnrollRetryAfter.Seconds()))},
	}
}

// overloaded tells a plain-HTTP enrolling agent to come back later: 429 with
// Retry-After. (Over WebSocket the slot is taken when the CSR arrives, and
// the refusal is a ServerErrorResponse Unavailable with retry_info.)
func (s *Server) overloaded() types.ConnectionResponse {
	return types.ConnectionResponse{
		Accept:             false,
		HTTPStatusCode:     http.StatusTooManyRequests,
		HTTPResponseHeader: map[string]string{"Retry-After": strconv.Itoa(int(s.cfg.EnrollRetryAfter.Seconds()))},
	}
}

// acquireEnroll takes an enrollment slot without waiting. The slot is given
// back on connection close, or after 30s if opamp-go never reports the
// connection (a failed WebSocket upgrade), so a slot cannot leak.
func (s *Server) acquireEnroll() (release func(), ok bool) {
	select {
	case s.enrolls <- struct{}{}:
	default:
		return nil, false
	}
	var once sync.Once
	release = func() { once.Do(func() { <-s.enrolls }) }
	time.AfterFunc(30*time.Second, release)
	return release, true
}

func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		return "", false
	}
	return strings.TrimSpace(token), true
}

const (
	transportWebSocket = "websocket"
	transportHTTP      = "http"
)

func transportOf(r *http.Request) string {
	if r.Header.Get("Content-Type") == "application/x-protobuf" {
		return transportHTTP
	}
	return transportWebSocket
}

// refusal is one refused connection or message, for the audit log.
type refusal struct {
	reason, remote, uid, detail string
}

// refusalAuditor writes refusals to the audit log at a bounded rate; those
// over the rate are counted and reported in the next entry written.
type refusalAuditor struct {
	limiter    *rate.Limiter
	mu         sync.Mutex
	suppressed int
	write      func(context.Context, refusal, int) error
}

func newRefusalAuditor(r rate.Limit, burst int, write func(context.Context, refusal, int) error) *refusalAuditor {
	return &refusalAuditor{limiter: rate.NewLimiter(r, burst), write: write}
}

func (a *refusalAuditor) record(ctx context.Context, r refusal) {
	a.mu.Lock()
	if !a.limiter.Allow() {
		a.suppressed++
		a.mu.Unlock()
		return
	}
	n := a.suppressed
	a.suppressed = 0
	a.mu.Unlock()
	if err := a.write(context.WithoutCancel(ctx), r, n); err != nil {
		a.mu.Lock()
		a.suppressed += n + 1
		a.mu.Unlock()
	}
}

func (s *Server) auditRefusal(ctx context.Context, r refusal, suppressed int) error {
	action, actor := "agent.connect_refused", "anonymous"
	if r.reason == reasonImpersonation {
		action = "agent.impersonation"
	}
	if r.uid != "" {
		actor = "agent:" + r.uid
	}
	return s.cfg.Store.Update(ctx, func(tx *state.Tx) error {
		_, err := s.cfg.Audit.Append(ctx, tx, audit.Record{
			Actor: actor, Action: action, Subject: r.remote,
			Details: map[string]any{"reason": r.reason, "detail": r.detail, "suppressed_since_last": suppressed},
		})
		return err
	})
}
