package api

import (
	"encoding/hex"
	"net/http"
	"time"

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

// EnrollmentToken is an enrollment token as listed: never its secret or
// the secret's hash.
type EnrollmentToken struct {
	ID        string            `json:"id"`
	Labels    map[string]string `json:"labels"`
	CreatedAt time.Time         `json:"created_at"`
	CreatedBy string            `json:"created_by"`
	ExpiresAt time.Time         `json:"expires_at"`
	MaxUses   int               `json:"max_uses"`
	Used      int               `json:"used"`
	UsesLeft  int               `json:"uses_left"`
	// State is active, used_up, expired or revoked.
	State     string     `json:"state"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	RevokedBy string     `json:"revoked_by,omitempty"`
}

func enrollmentTokenView(t state.EnrollmentToken, now time.Time) EnrollmentToken {
	out := EnrollmentToken{ID: t.ID, Labels: t.Labels, CreatedAt: t.CreatedAt, CreatedBy: t.CreatedBy, ExpiresAt: t.ExpiresAt,
		MaxUses: t.MaxUses, Used: t.Uses, UsesLeft: max(t.MaxUses-t.Uses, 0), State: "active", RevokedBy: t.RevokedBy}
	if out.Labels == nil {
		out.Labels = map[string]string{}
	}
	switch {
	case !t.RevokedAt.IsZero():
		out.State, out.RevokedAt = "revoked", &t.RevokedAt
	case !now.Before(t.ExpiresAt):
		out.State = "expired"
	case t.Uses >= t.MaxUses:
		out.State = "used_up"
	}
	return out
}

// RevokeTokenRequest is the body of POST /api/v1/tokens/{id}/revoke and
// POST /api/v1/admin-tokens/{id}/revoke.
type RevokeTokenRequest struct {
	Note string `json:"note,omitempty"`
}

// createToken: POST /api/v1/tokens. The service stores the token hashed
// and audits its creation in the same transaction.
func (a *API) createToken(w http.ResponseWriter, r *http.Request) {
	var req TokenRequest
	if !a.decodeBody(w, r, &req) {
		return
	}
	var ttl time.Duration
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 {
			writeError(w, http.StatusBadRequest, "ttl %q: want a positive duration up to %s", req.TTL, tokens.MaxEnrollmentTTL)
			return
		}
		ttl = d
	}
	tok, rec, err := a.tokens.CreateEnrollment(r.Context(), tokens.EnrollmentRequest{TTL: ttl, Uses: req.Uses, Labels: req.Labels,
		Actor: principal(r.Context()).Actor()})
	if a.tokenError(w, "create enrollment token", err) {
		return
	}
	if rec.Labels == nil {
		rec.Labels = map[string]string{}
	}
	writeJSON(w, http.StatusCreated, TokenResponse{ID: tok.ID, Token: tok.Secret, ExpiresAt: rec.ExpiresAt, Uses: rec.MaxUses, Labels: rec.Labels})
}

// listTokens: GET /api/v1/tokens.
func (a *API) listTokens(w http.ResponseWriter, r *http.Request) {
	ts, err := a.tokens.Enrollments(r.Context())
	if a.tokenError(w, "list enrollment tokens", err) {
		return
	}
	now := a.cfg.Clock()
	out := make([]EnrollmentToken, 0, len(ts))
	for _, t := range ts {
		out = append(out, enrollmentTokenView(t, now))
	}
	writeJSON(w, http.StatusOK, out)
}

// revokeToken: POST /api/v1/tokens/{id}/revoke.
func (a *API) revokeToken(w http.ResponseWriter, r *http.Request) {
	var req RevokeTokenRequest
	if !a.decodeBody(w, r, &req) {
		return
	}
	t, err := a.tokens.RevokeEnrollment(r.Context(), r.PathValue("id"), principal(r.Context()).Actor(), req.Note)
	if a.tokenError(w, "revoke enrollment token", err) {
		return
	}
	writeJSON(w, http.StatusOK, enrollmentTokenView(t, a.cfg.Clock()))
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

// AdminToken is an admin token as listed: never its secret or its hash.
type AdminToken struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	Role      string     `json:"role"`
	CreatedAt time.Time  `json:"created_at"`
	CreatedBy string     `json:"created_by,omitempty"`
	Revoked   bool       `json:"revoked"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	RevokedBy string     `json:"revoked_by,omitempty"`
}

func adminTokenView(t state.AdminToken) AdminToken {
	out := AdminToken{ID: t.ID, Name: t.Name, Role: t.Role, CreatedAt: t.CreatedAt, CreatedBy: t.CreatedBy,
		Revoked: !t.RevokedAt.IsZero(), RevokedBy: t.RevokedBy}
	if out.Revoked {
		out.RevokedAt = &t.RevokedAt
	}
	return out
}

// createAdminToken: POST /api/v1/admin-tokens. Separation of duties needs
// tokens per role; which role may mint which is the token service's rule
// (tokens.MayMint): admin cannot mint security tokens.
func (a *API) createAdminToken(w http.ResponseWriter, r *http.Request) {
	var req AdminTokenRequest
	if !a.decodeBody(w, r, &req) {
		return
	}
	p := principal(r.Context())
	tok, rec, err := a.tokens.CreateAdmin(r.Context(), tokens.AdminRequest{Name: req.Name, Role: req.Role, Actor: p.Actor(), ActorRole: p.Role})
	if a.tokenError(w, "create admin token", err) {
		return
	}
	writeJSON(w, http.StatusCreated, AdminTokenResponse{ID: tok.ID, Name: rec.Name, Role: rec.Role, Token: tok.Secret})
}

// listAdminTokens: GET /api/v1/admin-tokens.
func (a *API) listAdminTokens(w http.ResponseWriter, r *http.Request) {
	ts, err := a.tokens.Admins(r.Context())
	if a.tokenError(w, "list admin tokens", err) {
		return
	}
	out := make([]AdminToken, 0, len(ts))
	for _, t := range ts {
		out = append(out, adminTokenView(t))
	}
	writeJSON(w, http.StatusOK, out)
}

// revokeAdminToken: POST /api/v1/admin-tokens/{id}/revoke.
func (a *API) revokeAdminToken(w http.ResponseWriter, r *http.Request) {
	var req RevokeTokenRequest
	if !a.decodeBody(w, r, &req) {
		return
	}
	p := principal(r.Context())
	t, err := a.tokens.RevokeAdmin(r.Context(), r.PathValue("id"), p.Actor(), p.Role, req.Note)
	if a.tokenError(w, "revoke admin token", err) {
		return
	}
	writeJSON(w, http.StatusOK, adminTokenView(t))
}

func (a *API) tokenError(w http.ResponseWriter, what string, err error) bool {
	return a.domainError(w, what, err, "state store unavailable",
		errStatus{tokens.ErrInvalid, http.StatusBadRequest}, errStatus{tokens.ErrForbidden, http.StatusForbidden})
}
