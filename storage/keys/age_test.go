package keys

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func newStore(t *testing.T) (*AgeStore, string) {
	t.Helper()
	dir := t.TempDir()
	idFile := filepath.Join(dir, "age-identity.txt")
	if err := GenerateIdentity(idFile, time.Now()); err != nil {
		t.Fatal(err)
	}
	s, err := NewAgeStore(AgeConfig{Dir: filepath.Join(dir, "keys"), IdentityFile: idFile})
	if err != nil {
		t.Fatal(err)
	}
	return s, dir
}

func TestPutGetRoundTrip(t *testing.T) {
	ctx := context.Background()
	s, dir := newStore(t)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err := s.Put(ctx, "audit", edKey); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "root-ca", ecKey); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, "audit")
	if err != nil {
		t.Fatal(err)
	}
	if !edKey.Equal(got) {
		t.Fatal("ed25519 key changed in the round trip")
	}
	gotEC, err := s.Get(ctx, "root-ca")
	if err != nil || !ecKey.Equal(gotEC) {
		t.Fatalf("ecdsa key round trip: %v", err)
	}
	// At rest the file must not contain the key in the clear.
	raw, _ := os.ReadFile(filepath.Join(dir, "keys", "audit.key.age"))
	if bytes.Contains(raw, edKey.Seed()) || bytes.Contains(raw, []byte("PRIVATE KEY")) {
		t.Fatal("key file holds the private key unencrypted")
	}
	fi, _ := os.Stat(filepath.Join(dir, "keys", "audit.key.age"))
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", fi.Mode().Perm())
	}
}

func TestPutRefusesReplace(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	_, k1, _ := ed25519.GenerateKey(rand.Reader)
	_, k2, _ := ed25519.GenerateKey(rand.Reader)
	if err := s.Put(ctx, "audit", k1); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "audit", k2); !errors.Is(err, ErrExists) {
		t.Fatalf("second Put: %v, want ErrExists", err)
	}
	got, _ := s.Get(ctx, "audit")
	if !k1.Equal(got) {
		t.Fatal("key replaced")
	}
}

func TestGetErrors(t *testing.T) {
	ctx := context.Background()
	s, dir := newStore(t)
	if _, err := s.Get(ctx, "absent"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("absent key: %v, want ErrNotFound", err)
	}
	if _, err := s.Get(ctx, "../etc/passwd"); err == nil {
		t.Fatal("path traversal in key name accepted")
	}
	_, k, _ := ed25519.GenerateKey(rand.Reader)
	if err := s.Put(ctx, "audit", k); err != nil {
		t.Fatal(err)
	}
	// Another identity cannot decrypt it.
	otherID := filepath.Join(dir, "other.txt")
	if err := GenerateIdentity(otherID, time.Now()); err != nil {
		t.Fatal(err)
	}
	other, err := NewAgeStore(AgeConfig{Dir: filepath.Join(dir, "keys"), IdentityFile: otherID})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Get(ctx, "audit"); err == nil {
		t.Fatal("a different age identity decrypted the key")
	}
}

func TestIdentityPermissions(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "id.txt")
	if err := GenerateIdentity(p, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := GenerateIdentity(p, time.Now()); !errors.Is(err, os.ErrExist) {
		t.Fatalf("identity regenerated over an existing one: %v", err)
	}
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadIdentity(p); err == nil {
		t.Fatal("loaded a world-readable identity")
	}
}
