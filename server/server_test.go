package server

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trustamp/trustamp/audit"
	"github.com/trustamp/trustamp/storage/state"
)

func TestServeHealthzAndStop(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store, err := state.Open(ctx, state.Config{SQLitePath: filepath.Join(t.TempDir(), "s.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	// One entry, so the shutdown checkpoint has something to sign.
	l := audit.New(audit.Config{})
	if err := store.Update(ctx, func(tx *state.Tx) error {
		_, err := l.Append(ctx, tx, audit.Record{Actor: "system", Action: "test"})
		return err
	}); err != nil {
		t.Fatal(err)
	}

	ready := make(chan [2]net.Addr, 1)
	srv, err := New(Config{
		OpAMPAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", Store: store, AuditKey: key,
		OnListening: func(o, a net.Addr) { ready <- [2]net.Addr{o, a} },
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	addrs := <-ready
	for _, a := range addrs {
		resp, err := http.Get("http://" + a.String() + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		var body struct{ Status string }
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		json.Unmarshal(b, &body)
		if resp.StatusCode != 200 || body.Status != "ok" {
			t.Fatalf("healthz on %s: %d %s", a, resp.StatusCode, b)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
	rep, err := audit.VerifyStore(context.Background(), store, pub)
	if err != nil || rep.LastCheckpointSeq != 1 {
		t.Fatalf("shutdown did not leave the chain signed: %+v %v", rep, err)
	}
}

type downStore struct{}

func (downStore) Ping(context.Context) error { return errors.New("dial tcp 10.0.0.5:5432: refused") }

func TestHealthzReportsStateDown(t *testing.T) {
	h := &health{store: downStore{}}
	srv := &http.Server{Handler: h}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(l)
	defer srv.Close()
	resp, err := http.Get("http://" + l.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503", resp.StatusCode)
	}
	if want := `"state":"unreachable"`; !contains(b, want) || contains(b, "10.0.0.5") {
		t.Fatalf("body %s: want %s and no internal address", b, want)
	}
}

func TestListenError(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	defer l.Close()
	store, _ := state.Open(context.Background(), state.Config{SQLitePath: filepath.Join(t.TempDir(), "s.db")})
	defer store.Close()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	srv, _ := New(Config{OpAMPAddr: l.Addr().String(), AdminAddr: "127.0.0.1:0", Store: store, AuditKey: key})
	if err := srv.Run(context.Background()); err == nil {
		t.Fatal("Run on a taken port succeeded")
	}
}

func contains(b []byte, s string) bool { return strings.Contains(string(b), s) }
