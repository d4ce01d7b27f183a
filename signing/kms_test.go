package signing

import (
	"bytes"
	"context"
	"errors"
	"testing"

	vault "github.com/hashicorp/vault/api"

	"github.com/trustamp/trustamp/internal/testenv"
)

// A release signed with a key that never leaves Vault Transit verifies with
// only the public key, like one signed from a key file.
func TestSignWithVaultTransit(t *testing.T) {
	v := testenv.StartVault(t)
	cfg := vault.DefaultConfig()
	cfg.Address = v.Addr
	vc, err := vault.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	vc.SetToken(v.Token)
	if err := vc.Sys().Mount("transit", &vault.MountInput{Type: "transit"}); err != nil {
		t.Fatal(err)
	}
	if _, err := vc.Logical().Write("transit/keys/release-team", map[string]any{"type": "ecdsa-p256"}); err != nil {
		t.Fatal(err)
	}
	if _, err := vc.Logical().Write("transit/keys/ed-team", map[string]any{"type": "ed25519"}); err != nil {
		t.Fatal(err)
	}
	t.Setenv("VAULT_ADDR", v.Addr)
	t.Setenv("VAULT_TOKEN", v.Token)
	ctx := context.Background()

	s, err := OpenKMS(ctx, "hashivault://release-team")
	if err != nil {
		t.Fatal(err)
	}
	artifact := []byte("otelcol 0.115.0 linux/amd64")
	signed, err := s.Sign(ctx, bytes.NewReader(artifact))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(signed.Bundle, s.Public(), bytes.NewReader(artifact)); err != nil {
		t.Fatalf("bundle from a Transit key does not verify: %v", err)
	}
	if _, err := Verify(signed.Bundle, s.Public(), bytes.NewReader([]byte("other bytes"))); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("bundle verified over other bytes: %v", err)
	}
	if _, err := OpenKMS(ctx, "hashivault://ed-team"); err == nil {
		t.Fatal("an Ed25519 Transit key was accepted")
	}
	if _, err := OpenKMS(ctx, "hashivault://missing"); err == nil {
		t.Fatal("a missing Transit key was accepted")
	}
}
