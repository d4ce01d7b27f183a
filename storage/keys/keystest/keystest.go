// Package keystest is the contract every key store must meet, run against
// each backend (age files, Vault KV) by its own tests.
package keystest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"slices"
	"testing"

	"github.com/trustamp/trustamp/storage/keys"
)

// Run checks a fresh, empty store from open.
func Run(t *testing.T, open func(t *testing.T) keys.Store) {
	ctx := context.Background()
	t.Run("RoundTrip", func(t *testing.T) {
		s := open(t)
		ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		_, ed, _ := ed25519.GenerateKey(rand.Reader)
		rk, _ := rsa.GenerateKey(rand.Reader, 2048)
		for name, k := range map[string]crypto.Signer{"root-ca": ec, "audit": ed, "ocsp-rsa": rk} {
			if err := s.Put(ctx, name, k); err != nil {
				t.Fatal(err)
			}
			got, err := s.Get(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := keys.Fingerprint(k)
			if fp, _ := keys.Fingerprint(got); fp != want {
				t.Fatalf("%s: read back a different key", name)
			}
		}
		names, err := s.List(ctx)
		if err != nil || !slices.Equal(names, []string{"audit", "ocsp-rsa", "root-ca"}) {
			t.Fatalf("list %v %v", names, err)
		}
	})
	t.Run("NeverReplaced", func(t *testing.T) {
		s := open(t)
		a, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		b, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err := s.Put(ctx, "intermediate-ca", a); err != nil {
			t.Fatal(err)
		}
		if err := s.Put(ctx, "intermediate-ca", b); !errors.Is(err, keys.ErrExists) {
			t.Fatalf("second put: %v, want ErrExists", err)
		}
		got, _ := s.Get(ctx, "intermediate-ca")
		if !a.PublicKey.Equal(got.Public()) {
			t.Fatal("the first key was replaced")
		}
	})
	t.Run("Missing", func(t *testing.T) {
		s := open(t)
		if _, err := s.Get(ctx, "nonesuch"); !errors.Is(err, keys.ErrNotFound) {
			t.Fatalf("get missing: %v, want ErrNotFound", err)
		}
		if names, err := s.List(ctx); err != nil || len(names) != 0 {
			t.Fatalf("empty store lists %v %v", names, err)
		}
	})
	t.Run("BadNames", func(t *testing.T) {
		s := open(t)
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		for _, name := range []string{"", "../x", "Root", "a/b"} {
			if err := s.Put(ctx, name, k); err == nil {
				t.Fatalf("put %q accepted", name)
			}
		}
	})
	t.Run("Anchor", func(t *testing.T) {
		s, ok := open(t).(keys.AnchorStore)
		if !ok {
			t.Fatal("the store cannot keep the state anchor (keys.AnchorStore)")
		}
		if _, err := s.ReadAnchor(ctx); !errors.Is(err, keys.ErrNotFound) {
			t.Fatalf("read of a store with no anchor: %v, want ErrNotFound", err)
		}
		write := func(want []byte, next []byte) {
			t.Helper()
			err := s.UpdateAnchor(ctx, func(cur []byte) ([]byte, error) {
				if string(cur) != string(want) {
					t.Errorf("update saw %q, want %q", cur, want)
				}
				return next, nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		write(nil, []byte(`{"v":1}`))
		write([]byte(`{"v":1}`), nil) // nil leaves it as it is
		write([]byte(`{"v":1}`), []byte(`{"v":2}`))
		if got, err := s.ReadAnchor(ctx); err != nil || string(got) != `{"v":2}` {
			t.Fatalf("read back %q %v", got, err)
		}
		boom := errors.New("boom")
		if err := s.UpdateAnchor(ctx, func([]byte) ([]byte, error) { return nil, boom }); !errors.Is(err, boom) {
			t.Fatalf("fn error: %v", err)
		}
		if err := s.UpdateAnchor(ctx, func([]byte) ([]byte, error) { return make([]byte, keys.MaxAnchorSize+1), nil }); err == nil {
			t.Fatal("an oversized anchor was stored")
		}
		if names, err := s.(keys.Store).List(ctx); err != nil || len(names) != 0 {
			t.Fatalf("the anchor is listed as a key: %v %v", names, err)
		}
	})
}
