package api

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/trustamp/trustamp/storage/state"
	"github.com/trustamp/trustamp/tokens"
)

// roleToken stores an admin token with role and returns its secret.
func roleToken(t *testing.T, s *state.Store, role string) string {
	t.Helper()
	tok, _ := tokens.New(tokens.AdminPrefix)
	ctx := context.Background()
	if err := s.Update(ctx, func(tx *state.Tx) error {
		return tx.InsertAdminToken(ctx, state.AdminToken{ID: tok.ID, Name: role, Role: role, Hash: tok.Hash, CreatedAt: time.Now()})
	}); err != nil {
		t.Fatal(err)
	}
	return tok.Secret
}

// unreached stands in for the services behind endpoints whose body a test
// refuses: a refused body must never reach a service, and if one did, the
// nil interface would panic the test.
type unreached struct {
	Revoker
	Releases
	Policies
}

// newStrictAPI is an API with every endpoint class routed.
func newStrictAPI(t *testing.T) (*API, map[string]string) {
	t.Helper()
	base, _, s := newAPI(t)
	toks := map[string]string{}
	for _, role := range []string{RoleAdmin, RoleSecurity, RoleRelease, RoleAuditor} {
		toks[role] = roleToken(t, s, role)
	}
	u := unreached{}
	cfg := base.cfg
	cfg.Store, cfg.Revocations, cfg.Releases, cfg.Policies = s, u, u, u
	cfg.MaxBodyBytes = 0 // the default
	return New(cfg), toks
}

// TestHostileBodiesRefused sends every endpoint class that takes a JSON
// body the bodies a hostile token holder would try. Each must be refused
// with 400 naming what was wrong, before any service sees it.
func TestHostileBodiesRefused(t *testing.T) {
	a, toks := newStrictAPI(t)
	endpoints := map[string]string{ // path -> a role allowed to call it
		"/api/v1/tokens":                         RoleAdmin,
		"/api/v1/admin-tokens":                   RoleAdmin,
		"/api/v1/rotations":                      RoleAdmin,
		"/api/v1/revocations":                    RoleAdmin,
		"/api/v1/revocations/undo":               RoleAdmin,
		"/api/v1/agents/some-uid/release":        RoleSecurity,
		"/api/v1/publishers":                     RoleAdmin,
		"/api/v1/packages/otelcol/1.0.0/yank":    RoleRelease,
		"/api/v1/packages/otelcol/1.0.0/promote": RoleRelease,
		"/api/v1/policies/simulate":              RoleAuditor,
	}
	bodies := []struct {
		name, body, inError string
	}{
		{"null", `null`, "want a JSON object, got null"},
		{"array", `[{}]`, "want a JSON object, got an array"},
		{"string", `"x"`, "want a JSON object, got a string"},
		{"number", `1`, "want a JSON object, got a number"},
		{"empty", ``, "empty"},
		{"trailing object", `{} {}`, "trailing data"},
		{"trailing garbage", `{}x`, "trailing data"},
		{"unknown field", `{"no_such_field":1}`, "unknown field"},
		{"not json", `{nope`, "invalid character"},
		{"truncated", `{"note":"`, "unexpected EOF"},
	}
	for ep, role := range endpoints {
		tok := toks[role]
		for _, b := range bodies {
			t.Run(strings.TrimPrefix(ep, "/api/v1/")+"/"+b.name, func(t *testing.T) {
				w := do(a, http.MethodPost, ep, tok, b.body)
				if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), b.inError) {
					t.Fatalf("%d %s, want 400 naming %q", w.Code, w.Body, b.inError)
				}
			})
		}
	}
	// Endpoints without parameters take no body, or {}; nothing else.
	for _, ep := range []string{"/api/v1/policies/reload", "/api/v1/ca/rotate-intermediate", "/api/v1/ca/rotate-root"} {
		for _, b := range []struct{ body, inError string }{{`null`, "got null"}, {`{"x":1}`, "unknown field"}, {`{}{}`, "trailing data"}} {
			if w := do(a, http.MethodPost, ep, toks[RoleAdmin], b.body); w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), b.inError) {
				t.Errorf("%s %q: %d %s, want 400 naming %q", ep, b.body, w.Code, w.Body, b.inError)
			}
		}
	}
}

// endless is a body that never ends: {"note":"aaaa...
type endless struct{ n int64 }

func (e *endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'a'
		if e.n+int64(i) < 9 {
			p[i] = `{"note":"`[e.n+int64(i)]
		}
	}
	e.n += int64(len(p))
	return len(p), nil
}

// TestOversizedBodyRefusedUnread: a body past admin.max_body_bytes is
// answered 413 after reading at most a little past the limit, never whole.
func TestOversizedBodyRefusedUnread(t *testing.T) {
	a, toks := newStrictAPI(t)
	for _, ep := range []string{"/api/v1/tokens", "/api/v1/revocations", "/api/v1/policies/simulate", "/api/v1/policies/reload"} {
		tok := toks[RoleAdmin]
		body := &endless{}
		req := httptest.NewRequest(http.MethodPost, ep, io.LimitReader(body, 64<<20))
		req.Header.Set("Authorization", "Bearer "+tok)
		w := httptest.NewRecorder()
		a.ServeHTTP(w, req)
		if w.Code != http.StatusRequestEntityTooLarge || !strings.Contains(w.Body.String(), "admin.max_body_bytes") {
			t.Errorf("%s: %d %s, want 413 naming admin.max_body_bytes", ep, w.Code, w.Body)
		}
		if body.n > 2*DefaultMaxBodyBytes {
			t.Errorf("%s: read %d bytes of a 64 MiB body, want at most about %d", ep, body.n, DefaultMaxBodyBytes)
		}
	}
}

// TestBodyLimitConfigurable: MaxBodyBytes is the limit, and a body within
// it is accepted.
func TestBodyLimitConfigurable(t *testing.T) {
	base, tok, _ := newAPI(t)
	cfg := base.cfg
	cfg.MaxBodyBytes = 64
	a := New(cfg)
	if w := do(a, http.MethodPost, "/api/v1/tokens", tok, `{"labels":{"k":"`+strings.Repeat("v", 64)+`"}}`); w.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("over the configured limit: %d %s", w.Code, w.Body)
	}
	if w := do(a, http.MethodPost, "/api/v1/tokens", tok, ` {"uses":2} `+"\n"); w.Code != http.StatusCreated {
		t.Fatalf("within the limit: %d %s", w.Code, w.Body)
	}
}

// TestUploadLimit: an artifact larger than admin.max_upload_bytes is
// refused with 413 before it is streamed (declared length).
func TestUploadLimit(t *testing.T) {
	base, _, s := newAPI(t)
	tok := roleToken(t, s, RoleRelease)
	cfg := base.cfg
	cfg.Releases, cfg.MaxUploadBytes = unreached{}, 10
	a := New(cfg)
	w := do(a, http.MethodPost, "/api/v1/packages?type=t&version=1.0.0&platform=linux/amd64", tok, strings.Repeat("x", 11))
	if w.Code != http.StatusRequestEntityTooLarge || !strings.Contains(w.Body.String(), "admin.max_upload_bytes") {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
}
