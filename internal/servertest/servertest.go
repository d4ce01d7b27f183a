// Package servertest runs a complete trustamp server in-process for tests:
// a fresh data dir, the server Assemble builds for `trustamp serve`, on
// loopback ports, stopped in t.Cleanup.
package servertest

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/trustamp/trustamp/api"
	"github.com/trustamp/trustamp/datadir"
	"github.com/trustamp/trustamp/server"
)

// Clock is a settable clock: real time plus an offset tests advance.
type Clock struct {
	mu     sync.Mutex
	offset time.Duration
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

// Advance moves the clock forward.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}

// Env is a running server and what tests need to talk to it.
type Env struct {
	Dir       *datadir.Dir
	Server    *server.Server
	OpAMPAddr string // host:port
	CAPEM     []byte
	Admin     *api.Client // authenticated with the local admin credential
	AdminURL  string      // https://host:port of the admin listener
	Clock     *Clock
}

// Start initialises a data dir with configYAML as its config file, and runs
// the server on it until the test ends.
func Start(t testing.TB, configYAML string) *Env {
	t.Helper()
	return StartIn(t, filepath.Join(t.TempDir(), "data"), configYAML)
}

// StartIn is Start on a given data dir path.
func StartIn(t testing.TB, root, configYAML string) *Env {
	t.Helper()
	return start(t, root, configYAML, nil)
}

// StartWithEnv is Start with environment overrides for the server (such as
// TRUSTAMP_POSTGRES_DSN).
func StartWithEnv(t testing.TB, configYAML string, env map[string]string) *Env {
	t.Helper()
	return start(t, filepath.Join(t.TempDir(), "data"), configYAML, func(k string) string { return env[k] })
}

// StartInWithEnv is StartIn with environment overrides: two calls on one
// root with a shared PostgreSQL DSN are two replicas of one deployment.
func StartInWithEnv(t testing.TB, root, configYAML string, env map[string]string) *Env {
	t.Helper()
	return start(t, root, configYAML, func(k string) string { return env[k] })
}

func start(t testing.TB, root, configYAML string, getenv func(string) string) *Env {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	if err := os.MkdirAll(root, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "trustamp.yaml"), []byte(configYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	opts := datadir.Options{Layout: datadir.Layout{Root: root}, Getenv: getenv}
	if _, err := datadir.Init(ctx, opts); err != nil {
		t.Fatal(err)
	}
	d, err := datadir.Open(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	ol, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	al, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	clk := &Clock{}
	ready := make(chan struct{})
	srv, err := server.Assemble(ctx, d, server.AssembleOptions{
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
		OpAMPListener: ol, AdminListener: al, Clock: clk.Now,
		OnListening: func(net.Addr, net.Addr) { close(ready) },
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("server stopped at start: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
		d.Close()
	})
	cred, err := datadir.ReadLocalCredential(opts.Layout)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(cred.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := api.NewClient(api.ClientConfig{Server: cred.Server, Token: cred.Token, CAPEM: caPEM})
	if err != nil {
		t.Fatal(err)
	}
	return &Env{Dir: d, Server: srv, OpAMPAddr: ol.Addr().String(), CAPEM: caPEM, Admin: admin, AdminURL: cred.Server, Clock: clk}
}

// URL is the OpAMP endpoint for a transport: "websocket" or "http".
func (e *Env) URL(transport string) string {
	if transport == "http" {
		return "https://" + e.OpAMPAddr + "/v1/opamp"
	}
	return "wss://" + e.OpAMPAddr + "/v1/opamp"
}
