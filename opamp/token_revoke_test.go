package opamp_test

import (
	"context"
	"testing"

	"github.com/trustamp/trustamp/api"
)

// TestRevokedTokenRefused: an enrollment token revoked with uses left and
// time to run is refused at once, and the refusal is audited.
func TestRevokedTokenRefused(t *testing.T) {
	e := start(t, "")
	ctx := context.Background()
	tok, err := e.Admin.CreateToken(ctx, api.TokenRequest{Uses: 5, TTL: "10m"})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.agent("websocket").Enroll(ctx10(t), tok.Token); err != nil {
		t.Fatalf("enroll before the revocation: %v", err)
	}
	if _, err := e.Admin.RevokeToken(ctx, tok.ID, "leaked in a ticket"); err != nil {
		t.Fatal(err)
	}
	for _, tr := range transports {
		want401(t, tr+": revoked token", e.agent(tr).Enroll(ctx10(t), tok.Token))
	}
	if !e.hasAudit("agent.connect_refused", "token_revoked") {
		t.Fatal("refused revoked token not audited")
	}
}
