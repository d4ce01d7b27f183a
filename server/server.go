// Package server runs trustamp's long-lived parts as one task group: the
// OpAMP listener, the admin listener and the periodic jobs. When any task
// fails, or the context ends, all of them stop together.
package server

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/trustamp/trustamp/audit"
	"github.com/trustamp/trustamp/opamp"
	"github.com/trustamp/trustamp/revocation"
	"github.com/trustamp/trustamp/storage/state"
)

// Config wires a Server. Listeners, when given, are used instead of the
// addresses (tests pass ":0" listeners).
type Config struct {
	// OpAMPAddr is the agent-facing listen address; ignored when OpAMPListener is set.
	OpAMPAddr     string
	OpAMPListener net.Listener
	// AdminAddr is the admin listen address; ignored when AdminListener is set.
	AdminAddr     string
	AdminListener net.Listener
	// Store is the opened state store. Required.
	Store *state.Store
	// AuditKey signs audit checkpoints. Required.
	AuditKey ed25519.PrivateKey
	// CheckpointInterval is how often the audit chain head is signed. Zero means 1m.
	CheckpointInterval time.Duration
	// AuditAnchor keeps every checkpoint outside the database (the data
	// dir's state anchor). Nil means checkpoints stay in the database only.
	AuditAnchor audit.Anchor
	// Logger receives the server's logs. Nil means slog.Default().
	Logger *slog.Logger
	// OnListening, if set, is called with the bound addresses once both
	// listeners accept connections.
	OnListening func(opamp, admin net.Addr)

	// OpAMP serves agents at /v1/opamp. Nil serves only the public
	// endpoints (used by tests of this package).
	OpAMP OpAMPHandler
	// TLS returns the certificate both listeners present, on every
	// handshake (so it can change at run time). Nil serves plain HTTP, which
	// only tests do.
	TLS func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// CABundle returns what /v1/ca.pem serves (the current roots: both
	// during a root rollover). Nil means no such endpoint.
	CABundle func() []byte
	// Admin serves the admin listener beyond /healthz. Nil means none.
	Admin http.Handler
	// Revocation serves /v1/crl, /v1/crl.pem and /v1/ocsp and keeps the
	// handshake revocation set current. Nil means none (tests of this
	// package).
	Revocation Revocation
	// Downloads serves /v1/packages/{sha256} to agents. Nil means none.
	Downloads http.Handler
	// Policies reloads the policy files when they change. Nil means no
	// watching.
	Policies PolicyWatcher
	// Dependencies are checked by /healthz besides the state store (Vault):
	// a failing one makes the status "degraded" (still 200: agents with
	// certificates keep working; new issuance waits for it).
	Dependencies map[string]func(context.Context) error
}

// PolicyWatcher follows the policy directory (policies.Source).
type PolicyWatcher interface {
	Watch(ctx context.Context, actor string) error
}

// Revocation is what the listeners need from the revocation service.
type Revocation interface {
	Load(ctx context.Context) error
	Run(ctx context.Context, tick <-chan time.Time) error
	ServeCRL(http.ResponseWriter, *http.Request)
	ServeCRLPEM(http.ResponseWriter, *http.Request)
	ServeOCSP(http.ResponseWriter, *http.Request)
}

// OpAMPHandler is what the OpAMP listener needs from the OpAMP server.
type OpAMPHandler interface {
	http.Handler
	ConnContext(ctx context.Context, c net.Conn) context.Context
	TLSConfig(getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error)) *tls.Config
	Start(ctx context.Context) error
	RunRotations(ctx context.Context) error
	RunPackages(ctx context.Context) error
}

// Server is trustamp serve.
type Server struct {
	// OpAMP is the OpAMP server when Assemble built this Server, so callers
	// (tests) can reach live connections.
	OpAMP *opamp.Server
	// Revocations is the revocation service when Assemble built this Server.
	Revocations *revocation.Service

	cfg    Config
	log    *slog.Logger
	audit  *audit.Log
	health *health
}

// New checks cfg and returns a Server ready to Run.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("server: a state store is required")
	}
	if cfg.AuditKey == nil {
		return nil, errors.New("server: an audit key is required")
	}
	if cfg.CheckpointInterval <= 0 {
		cfg.CheckpointInterval = time.Minute
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	return &Server{
		cfg:    cfg,
		log:    logger,
		audit:  audit.New(audit.Config{Key: cfg.AuditKey, Logger: logger, Anchor: cfg.AuditAnchor}),
		health: &health{store: cfg.Store, deps: cfg.Dependencies},
	}, nil
}

// Run serves until ctx ends or a task fails. A clean shutdown returns nil.
func (s *Server) Run(ctx context.Context) error {
	opampL, err := listen(s.cfg.OpAMPListener, s.cfg.OpAMPAddr, "opamp")
	if err != nil {
		return err
	}
	adminL, err := listen(s.cfg.AdminListener, s.cfg.AdminAddr, "admin")
	if err != nil {
		opampL.Close()
		return err
	}

	opampMux := http.NewServeMux()
	opampMux.Handle("GET /healthz", s.health)
	if s.cfg.CABundle != nil {
		opampMux.HandleFunc("GET /v1/ca.pem", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/x-pem-file")
			w.Header().Set("Cache-Control", "no-cache")
			w.Write(s.cfg.CABundle())
		})
	}
	if s.cfg.Revocation != nil {
		// The handshake set must be loaded before the first agent connects.
		if err := s.cfg.Revocation.Load(ctx); err != nil {
			opampL.Close()
			adminL.Close()
			return fmt.Errorf("server: load revocations: %w", err)
		}
		opampMux.HandleFunc("GET /v1/crl", s.cfg.Revocation.ServeCRL)
		opampMux.HandleFunc("GET /v1/crl.pem", s.cfg.Revocation.ServeCRLPEM)
		opampMux.HandleFunc("POST /v1/ocsp", s.cfg.Revocation.ServeOCSP)
		opampMux.HandleFunc("GET /v1/ocsp/", s.cfg.Revocation.ServeOCSP)
	}
	if s.cfg.Downloads != nil {
		opampMux.Handle("GET /v1/packages/{sha256}", s.cfg.Downloads)
	}
	opampSrv := newHTTPServer(opampMux)
	adminMux := http.NewServeMux()
	adminMux.Handle("GET /healthz", s.health)
	if s.cfg.Admin != nil {
		adminMux.Handle("/", s.cfg.Admin)
	}
	adminSrv := newHTTPServer(adminMux)
	if s.cfg.OpAMP != nil {
		if err := s.cfg.OpAMP.Start(ctx); err != nil {
			opampL.Close()
			adminL.Close()
			return fmt.Errorf("server: start opamp: %w", err)
		}
		opampMux.Handle("/v1/opamp", s.cfg.OpAMP)
		// Without ConnContext, opamp-go's plain-HTTP transport panics.
		opampSrv.ConnContext = s.cfg.OpAMP.ConnContext
	}
	if s.cfg.TLS != nil {
		if s.cfg.OpAMP != nil {
			opampL = tls.NewListener(opampL, s.cfg.OpAMP.TLSConfig(s.cfg.TLS))
		} else {
			opampL = tls.NewListener(opampL, &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: s.cfg.TLS})
		}
		adminL = tls.NewListener(adminL, &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: s.cfg.TLS})
	}

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return serveHTTP(ctx, opampSrv, opampL) })
	g.Go(func() error { return serveHTTP(ctx, adminSrv, adminL) })
	g.Go(func() error {
		return s.audit.RunCheckpoints(ctx, s.cfg.Store, s.cfg.CheckpointInterval, nil)
	})
	if s.cfg.OpAMP != nil {
		g.Go(func() error { return s.cfg.OpAMP.RunRotations(ctx) })
		g.Go(func() error { return s.cfg.OpAMP.RunPackages(ctx) })
	}
	if s.cfg.Revocation != nil {
		g.Go(func() error { return s.cfg.Revocation.Run(ctx, nil) })
	}
	if s.cfg.Policies != nil {
		g.Go(func() error {
			// Without a watcher (inotify limits) policies still reload
			// through the API: log, do not stop serving.
			if err := s.cfg.Policies.Watch(ctx, "system:policy-watch"); err != nil {
				s.log.Error("policy files are not watched; reload with POST /api/v1/policies/reload", "err", err)
			}
			return nil
		})
	}
	s.log.Info("trustamp serving", "opamp", opampL.Addr().String(), "admin", adminL.Addr().String(), "state", s.cfg.Store.Driver())
	if s.cfg.OnListening != nil {
		s.cfg.OnListening(opampL.Addr(), adminL.Addr())
	}
	err = g.Wait()
	s.log.Info("trustamp stopped")
	return err
}

func listen(l net.Listener, addr, what string) (net.Listener, error) {
	if l != nil {
		return l, nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("server: %s listener on %s: %w", what, addr, err)
	}
	return l, nil
}

// newHTTPServer bounds what a slow or hostile client can hold open.
func newHTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
}

// serveHTTP serves until ctx ends, then drains for up to 10 seconds.
func serveHTTP(ctx context.Context, srv *http.Server, l net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return fmt.Errorf("server: serve %s: %w", l.Addr(), err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil {
		return fmt.Errorf("server: shutdown %s: %w", l.Addr(), err)
	}
	return nil
}

// health answers /healthz: 200 when every dependency answers, 503 otherwise.
// The body names failing checks but not their errors: the OpAMP listener is
// public, and error text can reveal hosts and versions.
type health struct {
	store interface{ Ping(context.Context) error }
	deps  map[string]func(context.Context) error
}

func (h *health) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body := struct {
		Status string            `json:"status"`
		Checks map[string]string `json:"checks"`
	}{Status: "ok", Checks: map[string]string{"state": "ok"}}
	// Each check has its own deadline, run side by side: a hanging
	// dependency must not make the store look down too.
	check := func(f func(context.Context) error) error {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		return f(ctx)
	}
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	for name, dep := range h.deps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := check(dep)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				body.Status, body.Checks[name] = "degraded", "unreachable: "+err.Error()
			} else {
				body.Checks[name] = "ok"
			}
		}()
	}
	storeErr := check(h.store.Ping)
	wg.Wait()
	code := http.StatusOK
	if storeErr != nil {
		body.Status, body.Checks["state"], code = "unavailable", "unreachable", http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(body)
}
