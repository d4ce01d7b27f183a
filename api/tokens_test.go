package api

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/trustamp/trustamp/storage/state"
)

// auditActions lists action:subject of every audit entry.
func auditActions(t *testing.T, s *state.Store) []string {
	t.Helper()
	ctx := context.Background()
	var out []string
	if err := s.View(ctx, func(tx *state.Tx) error {
		return tx.ScanAudit(ctx, state.AuditFilter{}, func(r state.AuditRow) error {
			out = append(out, r.Action+":"+r.Subject)
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestAdminCannotMintSecurity: the admin role runs the fleet but cannot
// give itself (or anyone) the security role, which lifts quarantines; only
// security mints security. Nor can any other role mint tokens above it.
func TestAdminCannotMintSecurity(t *testing.T) {
	a, toks := newStrictAPI(t)
	tests := []struct {
		caller, role string
		code         int
	}{
		{RoleAdmin, RoleSecurity, http.StatusForbidden},
		{RoleAdmin, RoleAdmin, http.StatusCreated},
		{RoleAdmin, RoleRelease, http.StatusCreated},
		{RoleAdmin, RoleAuditor, http.StatusCreated},
		{RoleSecurity, RoleSecurity, http.StatusCreated},
		{RoleSecurity, RoleAdmin, http.StatusForbidden},
		{RoleRelease, RoleRelease, http.StatusForbidden},
		{RoleAuditor, RoleAuditor, http.StatusForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.caller+" mints "+tt.role, func(t *testing.T) {
			w := do(a, http.MethodPost, "/api/v1/admin-tokens", toks[tt.caller], `{"name":"x","role":"`+tt.role+`"}`)
			if w.Code != tt.code {
				t.Fatalf("%d %s, want %d", w.Code, w.Body, tt.code)
			}
			if tt.code == http.StatusForbidden && tt.role == RoleSecurity && !strings.Contains(w.Body.String(), "only a security token may mint security tokens") {
				t.Fatalf("refusal does not explain the rule: %s", w.Body)
			}
		})
	}
}

// TestRevokedAdminTokenRefused: a revoked admin token is refused on the
// very next request; the revocation is audited; listings never show a
// secret or hash; admin cannot revoke a security token, security can
// revoke an admin token.
func TestRevokedAdminTokenRefused(t *testing.T) {
	a, toks := newStrictAPI(t)
	s := a.cfg.Store
	w := do(a, http.MethodPost, "/api/v1/admin-tokens", toks[RoleAdmin], `{"name":"ci","role":"auditor"}`)
	var minted AdminTokenResponse
	if err := json.Unmarshal(w.Body.Bytes(), &minted); err != nil || w.Code != http.StatusCreated {
		t.Fatalf("mint: %d %s", w.Code, w.Body)
	}
	if w := do(a, http.MethodGet, "/api/v1/agents", minted.Token, ""); w.Code != http.StatusOK {
		t.Fatalf("before revocation: %d", w.Code)
	}
	w = do(a, http.MethodGet, "/api/v1/admin-tokens", toks[RoleAuditor], "")
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), minted.ID) || strings.Contains(w.Body.String(), minted.Token) ||
		strings.Contains(w.Body.String(), "hash") {
		t.Fatalf("listing: %d %s", w.Code, w.Body)
	}
	if w := do(a, http.MethodPost, "/api/v1/admin-tokens/"+minted.ID+"/revoke", toks[RoleAdmin], `{"note":"left the team"}`); w.Code != http.StatusOK ||
		!strings.Contains(w.Body.String(), `"revoked": true`) {
		t.Fatalf("revoke: %d %s", w.Code, w.Body)
	}
	if w := do(a, http.MethodGet, "/api/v1/agents", minted.Token, ""); w.Code != http.StatusUnauthorized {
		t.Fatalf("revoked token: %d %s, want 401", w.Code, w.Body)
	}
	if !contains(auditActions(t, s), "admin_token.revoke:"+minted.ID) {
		t.Fatal("revocation not audited")
	}
	if w := do(a, http.MethodPost, "/api/v1/admin-tokens/"+minted.ID+"/revoke", toks[RoleAdmin], `{}`); w.Code != http.StatusConflict {
		t.Fatalf("second revocation: %d %s, want 409", w.Code, w.Body)
	}
	if w := do(a, http.MethodPost, "/api/v1/admin-tokens/nosuch/revoke", toks[RoleAdmin], `{}`); w.Code != http.StatusNotFound {
		t.Fatalf("unknown token: %d %s, want 404", w.Code, w.Body)
	}
	// Separation of duties holds for revocation too.
	var list []AdminToken
	json.Unmarshal(do(a, http.MethodGet, "/api/v1/admin-tokens", toks[RoleAdmin], "").Body.Bytes(), &list)
	ids := map[string]string{}
	for _, t := range list {
		ids[t.Name] = t.ID
	}
	if w := do(a, http.MethodPost, "/api/v1/admin-tokens/"+ids[RoleSecurity]+"/revoke", toks[RoleAdmin], `{}`); w.Code != http.StatusForbidden {
		t.Fatalf("admin revoking a security token: %d %s, want 403", w.Code, w.Body)
	}
	if w := do(a, http.MethodPost, "/api/v1/admin-tokens/"+ids[RoleAdmin]+"/revoke", toks[RoleSecurity], `{}`); w.Code != http.StatusOK {
		t.Fatalf("security revoking an admin token: %d %s", w.Code, w.Body)
	}
	if w := do(a, http.MethodGet, "/api/v1/agents", toks[RoleAdmin], ""); w.Code != http.StatusUnauthorized {
		t.Fatalf("admin token revoked by security: %d, want 401", w.Code)
	}
}

// TestEnrollmentTokenListAndRevoke: enrollment tokens are listed with
// their uses and state, never their secret; a revocation is audited and
// makes the token unusable in the state store (the OpAMP side is
// TestRevokedTokenRefused in opamp).
func TestEnrollmentTokenListAndRevoke(t *testing.T) {
	a, toks := newStrictAPI(t)
	s := a.cfg.Store
	w := do(a, http.MethodPost, "/api/v1/tokens", toks[RoleSecurity], `{"uses":1000000,"ttl":"720h","labels":{"env":"prod"}}`)
	var minted TokenResponse
	if err := json.Unmarshal(w.Body.Bytes(), &minted); err != nil || w.Code != http.StatusCreated {
		t.Fatalf("mint: %d %s", w.Code, w.Body)
	}
	w = do(a, http.MethodGet, "/api/v1/tokens", toks[RoleAuditor], "")
	var list []EnrollmentToken
	if err := json.Unmarshal(w.Body.Bytes(), &list); err != nil || len(list) != 1 || list[0].ID != minted.ID || list[0].State != "active" ||
		list[0].UsesLeft != 1_000_000 || strings.Contains(w.Body.String(), minted.Token) {
		t.Fatalf("listing: %d %s", w.Code, w.Body)
	}
	if w := do(a, http.MethodPost, "/api/v1/tokens/"+minted.ID+"/revoke", toks[RoleAuditor], `{}`); w.Code != http.StatusForbidden {
		t.Fatalf("auditor revoking: %d", w.Code)
	}
	if w := do(a, http.MethodPost, "/api/v1/tokens/"+minted.ID+"/revoke", toks[RoleAdmin], `{"note":"leaked"}`); w.Code != http.StatusOK ||
		!strings.Contains(w.Body.String(), `"state": "revoked"`) {
		t.Fatalf("revoke: %d %s", w.Code, w.Body)
	}
	if !contains(auditActions(t, s), "enroll_token.revoke:"+minted.ID) {
		t.Fatal("revocation not audited")
	}
	ctx := context.Background()
	err := s.Update(ctx, func(tx *state.Tx) error { return tx.UseEnrollmentToken(ctx, minted.ID, a.cfg.Clock()) })
	if err == nil {
		t.Fatal("a revoked token was spent")
	}
}
