// Package opamp is trustamp's OpAMP face, on opamp-go's server: who may
// connect (OnConnecting), what each AgentToServer message leads to (the
// per-connection state machine in conn.go), enrollment with the first
// certificate, identity binding on mTLS connections, and the registry of live
// connections the server uses to push to or cut off an agent.
//
// It never talks SQL: it calls the state store's typed methods and the CA.
package opamp

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/open-telemetry/opamp-go/protobufs"
	opampserver "github.com/open-telemetry/opamp-go/server"
	"github.com/open-telemetry/opamp-go/server/types"
	"golang.org/x/time/rate"

	"github.com/trustamp/trustamp/audit"
	"github.com/trustamp/trustamp/ca"
	"github.com/trustamp/trustamp/policies"
	"github.com/trustamp/trustamp/storage/state"
)

// Path is where agents connect, as the OpAMP specification recommends.
const Path = "/v1/opamp"

// Config wires a Server. Zero values of the optional fields are documented
// defaults.
type Config struct {
	// Store, CA and Audit are required.
	Store *state.Store
	CA    *ca.Authority
	Audit *audit.Log
	// ReplicaID names this process in the registry. Empty means the
	// hostname.
	ReplicaID string
	// HeartbeatInterval is sent in every opamp connection settings offer
	// (opamp-go clients treat 0 as "heartbeats off"). Zero means 30s.
	HeartbeatInterval time.Duration
	// MaxConcurrentEnrollments bounds enrollments in progress: a plain-HTTP
	// request holds a slot while it is handled (its body already read), a
	// WebSocket only while its CSR is handled, so idle sockets hold none.
	// Beyond it agents are told to retry. Zero means 256.
	MaxConcurrentEnrollments int
	// EnrollRetryAfter is the retry delay given to agents refused for
	// overload. Zero means 5s.
	EnrollRetryAfter time.Duration
	// UnauthorizedAuditRate bounds audit entries for refused connections,
	// per second, so a flood cannot fill the log; refusals beyond it are
	// counted in the next entry. Zero means 1/s with a burst of 20.
	UnauthorizedAuditRate rate.Limit
	// Profiles are the certificate profiles by name; Profile names the one
	// for OpAMP connection certificates. Nil/empty means ca.Profile defaults.
	Profiles map[string]ca.Profile
	Profile  string
	// Policies returns the policy set in force: certificate_profile rules
	// pick profiles, auto_revoke rules act on refusals. Nil means none.
	Policies func() *policies.Set
	// Events receives security events (impersonation, revoked certificate
	// presented, identity changed, CSR refused) for auto_revoke policies.
	// Nil means they are only logged and audited.
	Events EventSink
	// Destinations are the other connections agents get certificates for,
	// by name. Nil means none.
	Destinations map[string]Destination
	// RotationRate bounds server-initiated rotations fleet-wide, per
	// second. Zero means 50.
	RotationRate float64
	// ScanInterval is how often the scheduler looks for certificates due for
	// rotation. Zero means 10s. Due rotations are dispatched every second.
	ScanInterval time.Duration
	// OfferTimeout is how long an offer or CSR request may go unconfirmed
	// before the rotation is stalled and retried with backoff. Zero means 2m.
	OfferTimeout time.Duration
	// AgentCSRInterval is the minimum average interval between CSRs one
	// agent sends on its own (burst of 3). Zero means 10s.
	AgentCSRInterval time.Duration
	// Revocations is consulted on every handshake and message; nil means
	// nothing is revoked (tests of other features).
	Revocations RevocationChecker
	// Packages decides what agents that accept packages are offered; nil
	// means no packages are offered.
	Packages Packages
	// PackageRefresh is how often every connected agent's offer is
	// recomputed without a local change (changes made on another replica).
	// Zero means 30s.
	PackageRefresh time.Duration
	// Limits bound message size and what a message may carry. Zero fields
	// mean their documented defaults.
	Limits Limits
	// EnrollTimeout is how long a token-authenticated WebSocket connection
	// may stay open: one that has not obtained its certificate by then is
	// closed and logged, so idle sockets cannot pile up. Zero means 10s.
	EnrollTimeout time.Duration
	// ReadTimeout bounds reading one plain-HTTP request body (headers are
	// bounded by the listener's ReadHeaderTimeout). Zero means 10s.
	ReadTimeout time.Duration
	// AfterFunc runs f after d, like time.AfterFunc, and returns a stop
	// function; tests inject one they fire by hand. Nil means time.AfterFunc.
	AfterFunc func(d time.Duration, f func()) (stop func() bool)
	// Metrics receives counters. Nil means a private, unexported set.
	Metrics *Metrics
	// Logger receives logs. Nil means slog.Default().
	Logger *slog.Logger
	// Clock returns the current time. Nil means time.Now.
	Clock func() time.Time
}

// RevocationChecker is the in-memory revocation set; revocation.Service is
// one. Revoked must not touch the database: it runs on every handshake.
type RevocationChecker interface {
	Revoked(serial string) (reason string, ok bool)
	// Presented records that a handshake presented a revoked certificate.
	Presented(serial string)
}

// Server handles OpAMP connections.
type Server struct {
	cfg      Config
	log      *slog.Logger
	metrics  *Metrics
	limits   Limits
	conns    *registry
	enrolls  chan struct{} // semaphore of enrolling connections
	refusals *refusalAuditor
	rotation *rotator
	handler  opampserver.HTTPHandlerFunc
	connCtx  opampserver.ConnContext
}

// New validates cfg and builds the opamp-go server behind the handler.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil || cfg.CA == nil || cfg.Audit == nil {
		return nil, errors.New("opamp: Store, CA and Audit are required")
	}
	if cfg.ReplicaID == "" {
		cfg.ReplicaID, _ = os.Hostname()
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = 30 * time.Second
	}
	if cfg.MaxConcurrentEnrollments <= 0 {
		cfg.MaxConcurrentEnrollments = 256
	}
	if cfg.EnrollRetryAfter <= 0 {
		cfg.EnrollRetryAfter = 5 * time.Second
	}
	if cfg.UnauthorizedAuditRate <= 0 {
		cfg.UnauthorizedAuditRate = 1
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics()
	}
	if cfg.Profile == "" {
		cfg.Profile = "default"
	}
	if cfg.RotationRate <= 0 {
		cfg.RotationRate = 50
	}
	if cfg.ScanInterval <= 0 {
		cfg.ScanInterval = 10 * time.Second
	}
	if cfg.OfferTimeout <= 0 {
		cfg.OfferTimeout = 2 * time.Minute
	}
	if cfg.AgentCSRInterval <= 0 {
		cfg.AgentCSRInterval = 10 * time.Second
	}
	if cfg.PackageRefresh <= 0 {
		cfg.PackageRefresh = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.EnrollTimeout <= 0 {
		cfg.EnrollTimeout = 10 * time.Second
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = 10 * time.Second
	}
	if cfg.AfterFunc == nil {
		cfg.AfterFunc = func(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	s := &Server{
		cfg:     cfg,
		log:     cfg.Logger,
		metrics: cfg.Metrics,
		limits:  cfg.Limits.withDefaults(),
		conns:   newRegistry(),
		enrolls: make(chan struct{}, cfg.MaxConcurrentEnrollments),
	}
	s.refusals = newRefusalAuditor(cfg.UnauthorizedAuditRate, 20, s.auditRefusal)
	s.rotation = newRotator(s)
	srv := opampserver.New(nil)
	h, connCtx, err := srv.Attach(opampserver.Settings{
		Callbacks:          types.Callbacks{OnConnecting: s.onConnecting},
		CustomCapabilities: []string{CSRCapability},
	})
	if err != nil {
		return nil, err
	}
	s.handler, s.connCtx = h, connCtx
	return s, nil
}

// Start marks this replica's earlier connections closed: whatever the
// registry said before this process started is stale.
func (s *Server) Start(ctx context.Context) error {
	return s.cfg.Store.Update(ctx, func(tx *state.Tx) error { return tx.DisconnectReplica(ctx, s.cfg.ReplicaID) })
}

// ConnContext must be the http.Server's ConnContext: opamp-go's plain-HTTP
// transport finds the connection through it and panics without it.
func (s *Server) ConnContext(ctx context.Context, c net.Conn) context.Context {
	return s.connCtx(ctx, c)
}

// TLSConfig is the listener's TLS: 1.2 or newer, client certificates asked
// for but optional (enrolling agents have none yet) and verified against the
// CA by the TLS stack; onConnecting then checks them against the state store.
// The certificate comes from getCert on every handshake, so a rollover can
// replace it without a restart.
func (s *Server) TLSConfig(getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error)) *tls.Config {
	base := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: getCert,
		ClientAuth:     tls.VerifyClientCertIfGiven,
		ClientCAs:      s.cfg.CA.Roots(),
		Time:           s.cfg.Clock,
	}
	// The trusted roots change during a root rollover: each handshake takes
	// the current pool.
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c := base.Clone()
		c.GetConfigForClient = nil
		c.ClientCAs = s.cfg.CA.Roots()
		return c, nil
	}
	return base
}

// Connected reports how many live connections an agent has on this replica.
func (s *Server) Connected(uid string) int { return s.conns.count(uid) }

// Disconnect closes every live WebSocket connection of an agent on this
// replica (opamp-go will not) and reports how many it closed.
func (s *Server) Disconnect(uid string) int { return s.conns.disconnect(uid) }

// DisconnectCerts closes the live connections of each agent uid that
// authenticated with one of the given serials, and counts them per serial:
// revoking one certificate leaves the agent's other connections alone.
func (s *Server) DisconnectCerts(certs map[string][]string) map[string]int {
	return s.conns.disconnectCerts(certs)
}

// capabilities are the server's capabilities, sent in every reply.
func (s *Server) capabilities() uint64 {
	if s.cfg.Packages != nil {
		return serverCapabilities | uint64(protobufs.ServerCapabilities_ServerCapabilities_OffersPackages)
	}
	return serverCapabilities
}

// revoked reports whether serial is revoked, and why.
func (s *Server) revoked(serial string) (string, bool) {
	if s.cfg.Revocations == nil {
		return "", false
	}
	return s.cfg.Revocations.Revoked(serial)
}

// AuthorizeAgent checks that an HTTP request on the OpAMP listener (a
// package download) carries an unrevoked agent client certificate that
// chains to the CA, and returns the agent's uid.
func (s *Server) AuthorizeAgent(r *http.Request) (string, error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return "", errors.New("no client certificate")
	}
	uid, _, _, err := s.checkAgentChain(r.TLS.PeerCertificates)
	if err != nil {
		return "", err
	}
	return uid.String(), nil
}
