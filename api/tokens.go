package api

import (
	"encoding/hex"
	"net/http"
	"regexp"
	"time"

	"github.com/trustamp/trustamp/audit"
	"github.com/trustamp/trustamp/storage/state"
	"github.com/trustamp/trustamp/tokens"
)

// TokenRequest is the body of POST /api/v1/tokens.
type TokenRequest struct {
	// TTL is a Go duration; empty means 1h. At most 720h.
	TTL string `json:"ttl,omitempty"`
	// Uses is how many agents may enroll with the token; 0 means 1.
	Uses int `json:"uses,omitempty"`
	// Labels become each enrolled agent's labels.
	Labels map[string]string `json:"labels,omitempty"`
}

// TokenResponse carries the secret, shown once.
type TokenResponse struct {
	ID        string            `json:"id"`
	Token     string            `json:"token"`
	ExpiresAt time.Time         `json:"expires_at"`
	Uses      int               `json:"uses"`
	Labels    map[string]string `json:"labels"`
}

const (
	maxTokenTTL  = 30 * 24 * time.Hour
	maxTokenUses = 1_000_000
)

var labelPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$`)

// createToken: POST /api/v1/tokens. The token is stored hashed and its
// creation audited in the same transaction.
func (a *API) createToken(w http.ResponseWriter, r *http.Request) {
	var req TokenRequest
	if !a.decodeBody(w, r, &req) {
		return
	}
	ttl := time.Hour
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 || d > maxTokenTTL {
			writeError(w, http.StatusBadRequest, "ttl %q: want a positive duration up to %s", req.TTL, maxTokenTTL)
			return
		}
		ttl = d
	}
	if req.Uses == 0 {
		req.Uses = 1
	}
	if req.Uses < 0 || req.Uses > maxTokenUses {
		writeError(w, http.StatusBadRequest, "uses %d: want 1 to %d", req.Uses, maxTokenUses)
		return
	}
	for k, v := range req.Labels {
		if !labelPattern.MatchString(k) || len(v) > 256 {
			writeError(w, http.StatusBadRequest, "label %q: keys are letters, digits and ._/- (max 63), values at most 256 bytes", k)
			return
		}
	}
	tok, err := tokens.New(tokens.EnrollPrefix)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "mint token: %v", err)
		return
	}
	p := principal(r.Context())
	now := a.cfg.Clock()
	rec := state.EnrollmentToken{ID: tok.ID, Hash: tok.Hash, Labels: req.Labels, MaxUses: req.Uses,
		ExpiresAt: now.Add(ttl), CreatedAt: now, CreatedBy: p.Actor()}
	err = a.cfg.Store.Update(r.Context(), func(tx *state.Tx) error {
		if err := tx.InsertEnrollmentToken(r.Context(), rec); err != nil {
			return err
		}
		_, err := a.cfg.Audit.Append(r.Context(), tx, audit.Record{
			Actor: p.Actor(), Action: "enroll_token.create", Subject: tok.ID,
			Details: map[string]any{"uses": req.Uses, "expires_at": rec.ExpiresAt.Format(time.RFC3339), "labels": rec.Labels},
		})
		return err
	})
	if err != nil {
		a.log.Error("create enrollment token", "err", err)
		writeError(w, http.StatusServiceUnavailable, "state store unavailable")
		return
	}
	if rec.Labels == nil {
		rec.Labels = map[string]string{}
	}
	writeJSON(w, http.StatusCreated, TokenResponse{ID: tok.ID, Token: tok.Secret, ExpiresAt: rec.ExpiresAt, Uses: req.Uses, Labels: rec.Labels})
}

func hexString(b []byte) string { return hex.EncodeToString(b) }

// AdminTokenRequest is the body of POST /api/v1/admin-tokens.
type AdminTokenRequest struct {
	// Name says whose token it is ("alice", "ci-release").
	Name string `json:"name"`
	// Role is admin, security, release or auditor.
	Role string `json:"role"`
}

// AdminTokenResponse carries the secret, shown once.
type AdminTokenResponse struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Role  string `json:"role"`
	Token string `json:"token"`
}

var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,62}$`)

// createAdminToken: POST /api/v1/admin-tokens (role admin). Separation of
// duties needs tokens per role: a security token may release quarantines,
// a release token publishes, an auditor token only reads reports.
func (a *API) createAdminToken(w http.ResponseWriter, r *http.Request) {
	var req AdminTokenRequest
	if !a.decodeBody(w, r, &req) {
		return
	}
	if !namePattern.MatchString(req.Name) {
		writeError(w, http.StatusBadRequest, "name %q: letters, digits and ._@- (max 63)", req.Name)
		return
	}
	switch req.Role {
	case RoleAdmin, RoleSecurity, RoleRelease, RoleAuditor:
	default:
		writeError(w, http.StatusBadRequest, "role %q: want admin, security, release or auditor", req.Role)
		return
	}
	tok, err := tokens.New(tokens.AdminPrefix)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "mint token: %v", err)
		return
	}
	p := principal(r.Context())
	err = a.cfg.Store.Update(r.Context(), func(tx *state.Tx) error {
		if err := tx.InsertAdminToken(r.Context(), state.AdminToken{ID: tok.ID, Name: req.Name, Role: req.Role,
			Hash: tok.Hash, CreatedAt: a.cfg.Clock()}); err != nil {
			return err
		}
		_, err := a.cfg.Audit.Append(r.Context(), tx, audit.Record{Actor: p.Actor(), Action: "admin_token.create", Subject: tok.ID,
			Details: map[string]any{"name": req.Name, "role": req.Role}})
		return err
	})
	if err != nil {
		a.log.Error("create admin token", "err", err)
		writeError(w, http.StatusServiceUnavailable, "state store unavailable")
		return
	}
	writeJSON(w, http.StatusCreated, AdminTokenResponse{ID: tok.ID, Name: req.Name, Role: req.Role, Token: tok.Secret})
}
