// Package api is the admin REST API under /api/v1, for the CLI and for
// scripts. Every request carries a bearer admin token; each route names the
// roles allowed. Domain errors are translated to HTTP status codes here, and
// only here.
package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/trustamp/trustamp/audit"
	"github.com/trustamp/trustamp/policies"
	"github.com/trustamp/trustamp/storage/state"
	"github.com/trustamp/trustamp/tokens"
)

// Roles an admin token can hold (see the tokens package).
const (
	RoleAdmin    = tokens.RoleAdmin
	RoleSecurity = tokens.RoleSecurity
	RoleRelease  = tokens.RoleRelease
	RoleAuditor  = tokens.RoleAuditor
)

// Config wires the API.
type Config struct {
	// Store and Audit are required.
	Store *state.Store
	Audit *audit.Log
	// CA rolls the intermediate over. Nil means the endpoint answers 501.
	CA CARotator
	// Revocations revokes, undoes holds, releases quarantines and reports.
	// Nil means those endpoints answer 501.
	Revocations Revoker
	// Releases publishes and lists packages and manages publishers. Nil
	// means those endpoints are absent.
	Releases Releases
	// Policies is the live policy source; Targets and CheckPolicies serve
	// `policy simulate` (what agents would get under candidate files) and
	// DefaultProfile names the profile that applies when no rule matches.
	// Nil Policies means the policy endpoints are absent.
	Policies       Policies
	Targets        Targets
	CheckPolicies  func(*policies.Set) error
	DefaultProfile string
	// PolicyLimits bound the candidate policies of a simulation like the
	// live ones (the same limits: a set that simulates is a set that
	// loads). The zero value is the defaults.
	PolicyLimits policies.Limits
	// SimulateCostLimit bounds all the CEL evaluations of one simulation
	// together (policies.simulate_cost_limit); a simulation that reaches
	// it is answered 422. Zero means policies.DefaultSimulateCostLimit.
	SimulateCostLimit uint64
	// Destinations are the configured certificate destinations besides
	// "opamp", which rotations may name.
	Destinations []string
	// Gatherer serves /metrics. Nil means no /metrics route.
	Gatherer prometheus.Gatherer
	// MaxBodyBytes bounds a JSON request body (admin.max_body_bytes): a
	// larger one is refused with 413 before it is read further. Zero means
	// DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// MaxUploadBytes bounds a package artifact uploaded to
	// POST /api/v1/packages (admin.max_upload_bytes). Zero means
	// DefaultMaxUploadBytes.
	MaxUploadBytes int64
	// Logger receives logs. Nil means slog.Default().
	Logger *slog.Logger
	// Clock returns the current time. Nil means time.Now.
	Clock func() time.Time
}

// API serves the admin endpoints.
type API struct {
	cfg    Config
	log    *slog.Logger
	mux    *http.ServeMux
	tokens *tokens.Service
}

// New builds the handler.
func New(cfg Config) *API {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.SimulateCostLimit == 0 {
		cfg.SimulateCostLimit = policies.DefaultSimulateCostLimit
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.MaxUploadBytes <= 0 {
		cfg.MaxUploadBytes = DefaultMaxUploadBytes
	}
	a := &API{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux(),
		tokens: tokens.NewService(tokens.ServiceConfig{Store: cfg.Store, Audit: cfg.Audit, Clock: cfg.Clock})}
	all := []string{RoleAdmin, RoleSecurity, RoleRelease, RoleAuditor}
	a.mux.Handle("GET /api/v1/agents", a.auth(a.listAgents, all...))
	a.mux.Handle("GET /api/v1/agents/{uid}", a.auth(a.getAgent, all...))
	a.mux.Handle("POST /api/v1/tokens", a.auth(a.createToken, RoleAdmin, RoleSecurity))
	a.mux.Handle("GET /api/v1/tokens", a.auth(a.listTokens, RoleAdmin, RoleSecurity, RoleAuditor))
	a.mux.Handle("POST /api/v1/tokens/{id}/revoke", a.auth(a.revokeToken, RoleAdmin, RoleSecurity))
	// Which role may mint or revoke which is the token service's rule
	// (admin never mints security tokens).
	a.mux.Handle("POST /api/v1/admin-tokens", a.auth(a.createAdminToken, RoleAdmin, RoleSecurity))
	a.mux.Handle("GET /api/v1/admin-tokens", a.auth(a.listAdminTokens, RoleAdmin, RoleSecurity, RoleAuditor))
	a.mux.Handle("POST /api/v1/admin-tokens/{id}/revoke", a.auth(a.revokeAdminToken, RoleAdmin, RoleSecurity))
	a.mux.Handle("GET /api/v1/certificates", a.auth(a.listCertificates, all...))
	a.mux.Handle("POST /api/v1/rotations", a.auth(a.createRotation, RoleAdmin, RoleSecurity))
	a.mux.Handle("GET /api/v1/rotations/{id}", a.auth(a.getRotation, all...))
	a.mux.Handle("POST /api/v1/ca/rotate-intermediate", a.auth(a.rotateIntermediate, RoleAdmin, RoleSecurity))
	a.mux.Handle("POST /api/v1/ca/rotate-root", a.auth(a.rotateRoot, RoleAdmin, RoleSecurity))
	if cfg.Revocations != nil {
		a.mux.Handle("POST /api/v1/revocations", a.auth(a.createRevocation, RoleAdmin, RoleSecurity))
		a.mux.Handle("POST /api/v1/revocations/undo", a.auth(a.undoRevocation, RoleAdmin, RoleSecurity))
		// Lifting a quarantine is the security team's call alone.
		a.mux.Handle("POST /api/v1/agents/{uid}/release", a.auth(a.releaseAgent, RoleSecurity))
		a.mux.Handle("GET /api/v1/reports/revocations", a.auth(a.revocationReport, RoleAdmin, RoleSecurity, RoleAuditor))
	}
	if cfg.Releases != nil {
		a.mux.Handle("POST /api/v1/publishers", a.auth(a.addPublisher, RoleAdmin, RoleSecurity))
		a.mux.Handle("GET /api/v1/publishers", a.auth(a.listPublishers, all...))
		a.mux.Handle("POST /api/v1/packages", a.auth(a.publish, RoleAdmin, RoleRelease))
		a.mux.Handle("GET /api/v1/packages", a.auth(a.listPackages, all...))
		a.mux.Handle("POST /api/v1/packages/{type}/{version}/yank", a.auth(a.yank, RoleAdmin, RoleRelease, RoleSecurity))
		a.mux.Handle("POST /api/v1/packages/{type}/{version}/promote", a.auth(a.promote, RoleAdmin, RoleRelease))
		a.mux.Handle("GET /api/v1/packages/{type}/{version}/status", a.auth(a.rolloutStatus, all...))
		a.mux.Handle("GET /api/v1/pins", a.auth(a.listPins, all...))
	}
	if cfg.Policies != nil {
		a.mux.Handle("GET /api/v1/policies", a.auth(a.getPolicies, all...))
		a.mux.Handle("POST /api/v1/policies/reload", a.auth(a.reloadPolicies, RoleAdmin, RoleSecurity, RoleRelease))
		a.mux.Handle("POST /api/v1/policies/simulate", a.auth(a.simulatePolicies, RoleAdmin, RoleSecurity, RoleRelease, RoleAuditor))
	}
	a.mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint: %s %s", r.Method, r.URL.Path)
	})
	if cfg.Gatherer != nil {
		a.mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{}))
	}
	return a
}

func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

type principalKey struct{}

// Principal is the authenticated caller.
type Principal struct {
	TokenID string
	Role    string
}

// Actor is how the principal appears in audit entries.
func (p Principal) Actor() string { return "admin:" + p.TokenID }

func principal(ctx context.Context) Principal {
	p, _ := ctx.Value(principalKey{}).(Principal)
	return p
}

// auth checks the bearer token (hash lookup; the stored hash is compared in
// constant time) and the caller's role.
func (a *API) auth(h http.HandlerFunc, roles ...string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme, secret, ok := strings.Cut(r.Header.Get("Authorization"), " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || secret == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="trustamp-admin"`)
			writeError(w, http.StatusUnauthorized, "missing bearer token (pass --token or set TRUSTAMP_TOKEN)")
			return
		}
		var tok state.AdminToken
		err := a.cfg.Store.View(r.Context(), func(tx *state.Tx) (err error) {
			tok, err = tx.AdminTokenByHash(r.Context(), tokens.Hash(secret))
			return err
		})
		if errors.Is(err, state.ErrNotFound) || (err == nil && (!tokens.Matches(secret, tok.Hash) || !tok.RevokedAt.IsZero())) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="trustamp-admin", error="invalid_token"`)
			writeError(w, http.StatusUnauthorized, "invalid or revoked admin token")
			return
		}
		if err != nil {
			a.log.Error("admin auth", "err", err)
			writeError(w, http.StatusServiceUnavailable, "state store unavailable")
			return
		}
		allowed := false
		for _, role := range roles {
			allowed = allowed || tok.Role == role
		}
		if !allowed {
			writeError(w, http.StatusForbidden, "role %q may not %s %s (allowed: %s)", tok.Role, r.Method, r.URL.Path, strings.Join(roles, ", "))
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, Principal{TokenID: tok.ID, Role: tok.Role})))
	})
}

// Error is the body of every error response.
type Error struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, code int, format string, args ...any) {
	writeJSON(w, code, Error{Error: fmt.Sprintf(format, args...)})
}

// writeJSON encodes v before writing the status, so an encoding failure is
// a 500 naming it, never a 200 with an empty body.
func writeJSON(w http.ResponseWriter, code int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		buf.Reset()
		code = http.StatusInternalServerError
		json.NewEncoder(&buf).Encode(map[string]string{"error": "api: encode response: " + err.Error()})
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	w.Write(buf.Bytes())
}
