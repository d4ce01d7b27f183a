package api

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trustamp/trustamp/audit"
	"github.com/trustamp/trustamp/storage/state"
	"github.com/trustamp/trustamp/tokens"
)

func newAPI(t *testing.T) (*API, string, *state.Store) {
	t.Helper()
	ctx := context.Background()
	s, err := state.Open(ctx, state.Config{SQLitePath: filepath.Join(t.TempDir(), "s.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	tok, _ := tokens.New(tokens.AdminPrefix)
	s.Update(ctx, func(tx *state.Tx) error {
		return tx.InsertAdminToken(ctx, state.AdminToken{ID: tok.ID, Name: "t", Role: RoleSecurity, Hash: tok.Hash, CreatedAt: time.Now()})
	})
	return New(Config{Store: s, Audit: audit.New(audit.Config{})}), tok.Secret, s
}

func do(a *API, method, path, token, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	w := httptest.NewRecorder()
	a.ServeHTTP(w, req)
	return w
}

func TestCreateTokenValidation(t *testing.T) {
	a, tok, _ := newAPI(t)
	tests := []struct {
		name, body string
		code       int
		inBody     string
	}{
		{"defaults", `{}`, http.StatusCreated, `"uses": 1`},
		{"labels", `{"ttl":"2h","uses":3,"labels":{"env":"prod"}}`, http.StatusCreated, `"env": "prod"`},
		{"bad ttl", `{"ttl":"soon"}`, http.StatusBadRequest, "ttl"},
		{"ttl too long", `{"ttl":"1000h"}`, http.StatusBadRequest, "ttl"},
		{"negative uses", `{"uses":-1}`, http.StatusBadRequest, "uses"},
		{"bad label key", `{"labels":{"bad key":"x"}}`, http.StatusBadRequest, "label"},
		{"unknown field", `{"usses":2}`, http.StatusBadRequest, "usses"},
		{"not json", `nope`, http.StatusBadRequest, "body"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := do(a, http.MethodPost, "/api/v1/tokens", tok, tt.body)
			if w.Code != tt.code || !strings.Contains(w.Body.String(), tt.inBody) {
				t.Fatalf("%d %s, want %d containing %q", w.Code, w.Body, tt.code, tt.inBody)
			}
		})
	}
}

func TestCreatedTokenIsStoredHashedAndAudited(t *testing.T) {
	a, tok, s := newAPI(t)
	w := do(a, http.MethodPost, "/api/v1/tokens", tok, `{"uses":2}`)
	if w.Code != http.StatusCreated {
		t.Fatal(w.Body)
	}
	secret := between(w.Body.String(), `"token": "`, `"`)
	ctx := context.Background()
	err := s.View(ctx, func(tx *state.Tx) error {
		et, err := tx.EnrollmentTokenByHash(ctx, tokens.Hash(secret))
		if err != nil || et.MaxUses != 2 || !strings.HasPrefix(et.CreatedBy, "admin:") {
			t.Fatalf("stored token %+v %v", et, err)
		}
		found := false
		tx.ScanAudit(ctx, state.AuditFilter{}, func(r state.AuditRow) error {
			found = found || (r.Action == "enroll_token.create" && r.Subject == et.ID && !strings.Contains(r.Details, secret))
			return nil
		})
		if !found {
			t.Fatal("no audit entry (without the secret) for the token")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestAuth(t *testing.T) {
	a, tok, _ := newAPI(t)
	if w := do(a, http.MethodGet, "/api/v1/agents", "", ""); w.Code != http.StatusUnauthorized || w.Header().Get("WWW-Authenticate") == "" {
		t.Fatalf("no token: %d", w.Code)
	}
	if w := do(a, http.MethodGet, "/api/v1/agents", "tsa_wrong", ""); w.Code != http.StatusUnauthorized {
		t.Fatalf("wrong token: %d", w.Code)
	}
	if w := do(a, http.MethodGet, "/api/v1/agents", tok, ""); w.Code != http.StatusOK || strings.TrimSpace(w.Body.String()) != "[]" {
		t.Fatalf("list: %d %s", w.Code, w.Body)
	}
	if w := do(a, http.MethodGet, "/api/v1/agents?connected=maybe", tok, ""); w.Code != http.StatusBadRequest {
		t.Fatalf("bad filter: %d", w.Code)
	}
	if w := do(a, http.MethodGet, "/api/v1/nothing", tok, ""); w.Code != http.StatusNotFound || !strings.Contains(w.Body.String(), "error") {
		t.Fatalf("unknown endpoint: %d %s", w.Code, w.Body)
	}
}

func between(s, start, end string) string {
	i := strings.Index(s, start)
	if i < 0 {
		return ""
	}
	s = s[i+len(start):]
	return s[:strings.Index(s, end)]
}
