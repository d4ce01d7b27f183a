package agent

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sigstore/sigstore/pkg/cryptoutils"

	"github.com/trustamp/trustamp/api"
	"github.com/trustamp/trustamp/internal/servertest"
	"github.com/trustamp/trustamp/signing"
)

// script packs a shell script as run.sh into a .tar.gz package.
func script(t testing.TB, body string) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	content := []byte("#!/bin/sh\n" + body + "\n")
	if err := tw.WriteHeader(&tar.Header{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755}); err != nil {
		t.Fatal(err)
	}
	if err := tw.WriteHeader(&tar.Header{Name: "bin/run.sh", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(content))}); err != nil {
		t.Fatal(err)
	}
	tw.Write(content)
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

// healthy is a package that stays up; broken exits at once.
func healthy(t testing.TB, version string) []byte {
	return script(t, "echo demo "+version+" up; exec sleep 600")
}

func broken(t testing.TB) []byte { return script(t, "echo crashing; exit 3") }

type publisher struct {
	signer *signing.Signer
	pub    crypto.PublicKey
}

func newPublisher(t testing.TB, env *servertest.Env) publisher {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s, err := signing.NewSigner(k)
	if err != nil {
		t.Fatal(err)
	}
	if env != nil {
		pemBytes, _ := cryptoutils.MarshalPublicKeyToPEM(k.Public())
		if _, err := env.Admin.AddPublisher(ctx(t), api.PublisherRequest{Name: "release-team", PublicKey: string(pemBytes)}); err != nil {
			t.Fatal(err)
		}
	}
	return publisher{s, k.Public()}
}

func (p publisher) sign(t testing.TB, content []byte) []byte {
	t.Helper()
	signed, err := p.signer.Sign(context.Background(), bytes.NewReader(content))
	if err != nil {
		t.Fatal(err)
	}
	return signed.Bundle
}

func (p publisher) publish(t testing.TB, env *servertest.Env, version string, content []byte) {
	t.Helper()
	_, err := env.Admin.Publish(ctx(t), "demo-agent", version, runtime.GOOS+"/"+runtime.GOARCH, p.sign(t, content),
		bytes.NewReader(content), int64(len(content)))
	if err != nil {
		t.Fatal(err)
	}
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

// logBuffer collects the agent's log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

type running struct {
	*Agent
	logs   *logBuffer
	cancel context.CancelFunc
	done   chan struct{} // closed when Run returned, with err
	err    error
}

// connected reports whether this agent process logged a connection: after
// a restart the server may still count the previous process's connection
// for a moment, so its count alone does not say the new one is up.
func (r *running) connected(env *servertest.Env) bool {
	return strings.Contains(r.logs.String(), "msg=connected") && env.Server.OpAMP.Connected(r.UID().String()) == 1
}

func (r *running) stop(t testing.TB) {
	t.Helper()
	r.cancel()
	select {
	case <-r.done:
		if r.err != nil {
			t.Fatalf("agent run: %v", r.err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("agent did not stop")
	}
}

// startAgent runs an agent against env with its state in dir.
func startAgent(t testing.TB, env *servertest.Env, dir, token string, pubs []crypto.PublicKey, command ...string) *running {
	t.Helper()
	return startAgentWith(t, env, dir, token, pubs, nil, command...)
}

// startAgentWith is startAgent with tweak applied to the agent before it
// runs (to inject its random source and clock).
func startAgentWith(t testing.TB, env *servertest.Env, dir, token string, pubs []crypto.PublicKey, tweak func(*Agent), command ...string) *running {
	t.Helper()
	logs := &logBuffer{}
	cfg := Config{ServerURL: env.URL("ws"), CAPEM: env.CAPEM, StateDir: dir, Type: "demo-agent", PublisherKeys: pubs,
		Command: command, HealthWindow: 2 * time.Second, Heartbeat: time.Second, MaxBackoff: time.Minute,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Stdout: io.Discard, Stderr: io.Discard}
	if token != "" {
		cfg.Token = func() (string, error) { return token, nil }
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if tweak != nil {
		tweak(a)
	}
	c, cancel := context.WithCancel(context.Background())
	r := &running{Agent: a, logs: logs, cancel: cancel, done: make(chan struct{})}
	go func() { r.err = a.Run(c); close(r.done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(20 * time.Second):
		}
		if t.Failed() || os.Getenv("AGENT_TEST_LOGS") != "" {
			t.Logf("agent log:\n%s", logs.String())
		}
	})
	return r
}

func waitFor(t testing.TB, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func token(t testing.TB, env *servertest.Env) string {
	t.Helper()
	tok, err := env.Admin.CreateToken(ctx(t), api.TokenRequest{Uses: 1, TTL: "10m"})
	if err != nil {
		t.Fatal(err)
	}
	return tok.Token
}

// Enrollment persists the identity; a restart connects with mTLS from the
// state dir and never needs the token again; a server-requested rotation
// switches to a new certificate only after connecting with it.
func TestIdentityEnrollRestartRotate(t *testing.T) {
	env := servertest.Start(t, "")
	dir := t.TempDir()
	r := startAgent(t, env, dir, token(t, env), nil)
	waitFor(t, "connected over mTLS", func() bool { return env.Server.OpAMP.Connected(r.UID().String()) == 1 })
	first := r.Serial()
	for name, mode := range map[string]os.FileMode{credsFile: 0o600, uidFile: 0o600} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil || st.Mode().Perm() != mode {
			t.Fatalf("%s: %v %v, want mode %v", name, err, st, mode)
		}
	}
	r.stop(t)

	// Restart without a token: the state dir is enough.
	r = startAgent(t, env, dir, "", nil)
	waitFor(t, "reconnected without a token", func() bool { return r.connected(env) })
	if r.Serial() != first {
		t.Fatalf("restart changed the certificate: %s -> %s", first, r.Serial())
	}

	// The server asks for a CSR (io.trustamp.csr); the agent rotates.
	if _, err := env.Admin.Rotate(ctx(t), api.RotationRequest{UIDs: []string{r.UID().String()}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "rotated", func() bool { return r.Serial() != first && env.Server.OpAMP.Connected(r.UID().String()) == 1 })
	saved, err := stateDir{dir}.load(credsFile)
	if err != nil || saved.serial() != r.Serial() {
		t.Fatalf("credentials on disk %v (%v), want the new serial %s", saved, err, r.Serial())
	}
	for _, leftover := range []string{nextFile, pendingFile} {
		if _, err := os.Stat(filepath.Join(dir, leftover)); !os.IsNotExist(err) {
			t.Fatalf("%s left after the rotation: %v", leftover, err)
		}
	}
	waitFor(t, "rotation confirmed", func() bool {
		ag, err := env.Admin.Agent(ctx(t), r.UID().String())
		return err == nil && ag.CertSerial == r.Serial()
	})
}

// An unusable token is a clear, final error.
func TestEnrollRefused(t *testing.T) {
	env := servertest.Start(t, "")
	a, err := New(Config{ServerURL: env.URL("ws"), CAPEM: env.CAPEM, StateDir: t.TempDir(),
		Token:  func() (string, error) { return "tst_not-a-token", nil },
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	err = a.Run(ctx(t))
	if err == nil || !strings.Contains(err.Error(), "enrollment refused") {
		t.Fatalf("run with a bad token: %v", err)
	}
}

// Upgrade, deliberate downgrade and rollback of a version that does not
// stay up, with the supervised command following the installed version.
func TestPackagesUpgradeDowngradeRollback(t *testing.T) {
	env := servertest.Start(t, "")
	pub := newPublisher(t, env)
	pub.publish(t, env, "1.0.0", healthy(t, "1.0.0"))
	pub.publish(t, env, "1.1.0", healthy(t, "1.1.0"))
	pub.publish(t, env, "1.2.0", broken(t))
	if _, err := env.Admin.Promote(ctx(t), "demo-agent", "1.0.0", nil); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	r := startAgent(t, env, dir, token(t, env), []crypto.PublicKey{pub.pub}, "/bin/sh", PackagePlaceholder+"/bin/run.sh")
	waitFor(t, "1.0.0 installed", func() bool { return r.Installed() == "1.0.0" })
	pid := func() int {
		r.sup.mu.Lock()
		defer r.sup.mu.Unlock()
		if r.sup.running == nil {
			return 0
		}
		return r.sup.running.cmd.Process.Pid
	}
	waitFor(t, "1.0.0 running", func() bool { return pid() != 0 })

	if _, err := env.Admin.Promote(ctx(t), "demo-agent", "1.1.0", nil); err != nil {
		t.Fatal(err)
	}
	old := pid()
	waitFor(t, "1.1.0 installed", func() bool { return r.Installed() == "1.1.0" })
	waitFor(t, "1.1.0 running in a new process", func() bool { p := pid(); return p != 0 && p != old })
	status := func(version string) api.Rollout {
		ro, err := env.Admin.Rollout(ctx(t), "demo-agent", version)
		if err != nil {
			t.Fatal(err)
		}
		return ro
	}
	waitFor(t, "1.1.0 reported installed", func() bool { return status("1.1.0").Counts["installed"] == 1 })

	// A version that exits at once is rolled back within the health
	// window and reported failed.
	if _, err := env.Admin.Promote(ctx(t), "demo-agent", "1.2.0", nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "1.2.0 reported failed", func() bool { return status("1.2.0").Counts["failed"] == 1 })
	if f := status("1.2.0").Failures; len(f) != 1 || !strings.Contains(f[0].Message, "rolled back to 1.1.0") {
		t.Fatalf("failure %+v, want the rollback named", f)
	}
	if v := r.Installed(); v != "1.1.0" {
		t.Fatalf("after the rollback %s is in force", v)
	}
	waitFor(t, "1.1.0 running again", func() bool { return pid() != 0 })

	// Deliberate downgrade (an operator pin lower): marked, accepted.
	if _, err := env.Admin.Promote(ctx(t), "demo-agent", "1.0.0", nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "downgrade to 1.0.0 reported installed", func() bool { return status("1.0.0").Counts["installed"] == 1 })
	if v := r.Installed(); v != "1.0.0" {
		t.Fatalf("after the downgrade %s is in force", v)
	}
	if _, err := os.Stat(filepath.Join(dir, pkgDir, trialFile)); !os.IsNotExist(err) {
		t.Fatalf("trial marker left behind: %v", err)
	}
}

// A revoked agent is refused and backs off instead of hammering the
// server, and says why.
func TestRevokedAgentBacksOff(t *testing.T) {
	env := servertest.Start(t, "")
	// The top draw makes the jittered schedule its upper bound; the clock
	// records each wait and lets the next attempt go at once, until seven.
	clock := &recordingClock{stopAfter: 7}
	r := startAgentWith(t, env, t.TempDir(), token(t, env), nil, func(a *Agent) {
		a.int64n = func(n int64) int64 { return n - 1 }
		a.sleep = clock.sleep
	})
	waitFor(t, "connected", func() bool { return env.Server.OpAMP.Connected(r.UID().String()) == 1 })
	if _, err := env.Admin.Revoke(ctx(t), api.RevocationRequest{UIDs: []string{r.UID().String()}, Reason: "keyCompromise"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "seven waits", func() bool { return len(clock.waits()) == 7 })
	if !strings.Contains(r.logs.String(), "certificate was revoked or it is quarantined") {
		t.Fatal("the agent does not say why it is refused")
	}
	// The server drops the connection (one wait on the failed schedule,
	// 1s at the top draw), then refuses: 5s doubling up to MaxBackoff (1m
	// in startAgent), never shorter.
	got := clock.waits()
	if got[0] == failBase {
		got = got[1:]
	}
	want := []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second, time.Minute, time.Minute}
	if got = got[:len(want)]; !slices.Equal(got, want) {
		t.Fatalf("waits after the revocation %v, want %v", got, want)
	}
}

// recordingClock is an agent's sleep for tests: it records each wait and
// returns at once, until stopAfter waits, then blocks until ctx ends.
type recordingClock struct {
	mu        sync.Mutex
	got       []time.Duration
	stopAfter int
}

func (c *recordingClock) sleep(ctx context.Context, d time.Duration) {
	c.mu.Lock()
	c.got = append(c.got, d)
	n := len(c.got)
	c.mu.Unlock()
	if n >= c.stopAfter {
		<-ctx.Done()
	}
}

func (c *recordingClock) waits() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.got)
}

// A dropped connection (server restart) is retried on the agent's own
// jittered schedule, not opamp-go's fixed one, and each successful
// reconnect starts the schedule over.
func TestLostConnectionReconnectsOnJitteredSchedule(t *testing.T) {
	env := servertest.Start(t, "")
	clock := &recordingClock{stopAfter: 1 << 30}
	r := startAgentWith(t, env, t.TempDir(), token(t, env), nil, func(a *Agent) {
		a.int64n = func(n int64) int64 { return n - 1 }
		a.sleep = clock.sleep
	})
	uid := r.UID().String()
	waitFor(t, "connected", func() bool { return env.Server.OpAMP.Connected(uid) == 1 })
	for i := range 3 {
		before := strings.Count(r.logs.String(), "msg=connected")
		env.Server.OpAMP.Disconnect(uid)
		waitFor(t, "reconnected", func() bool {
			return strings.Count(r.logs.String(), "msg=connected") > before && env.Server.OpAMP.Connected(uid) == 1
		})
		if n := len(clock.waits()); n != i+1 {
			t.Fatalf("after %d drops the agent waited %d times: %v", i+1, n, clock.waits())
		}
	}
	// One wait per drop, each the first of a fresh schedule.
	if got, want := clock.waits(), []time.Duration{failBase, failBase, failBase}; !slices.Equal(got, want) {
		t.Fatalf("waits %v, want %v (reset after each successful reconnect)", got, want)
	}
	if !strings.Contains(r.logs.String(), "connection lost") {
		t.Fatal("the agent does not say the connection was lost")
	}
}
