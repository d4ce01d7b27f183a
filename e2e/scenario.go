// Package e2e runs the whole trust loop with real processes: a trustamp
// server on MinIO, three `trustamp agent` supervisors running a demo agent
// binary, and the operator CLI. `make demo` narrates it; the test in this
// package asserts it. Every step waits for its effect and fails with what it
// was waiting for.
package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/trustamp/trustamp/api"
	"github.com/trustamp/trustamp/revocation"
)

// Config locates what the scenario runs.
type Config struct {
	// Trustamp is the trustamp binary; MinIO the MinIO server binary.
	Trustamp, MinIO string
	// RepoRoot is where `go build ./examples/demo-agent` works.
	RepoRoot string
	// Work is a scratch directory (data dirs, logs, packages).
	Work string
	// Out receives the narration.
	Out io.Writer
}

// Scenario is one run.
type Scenario struct {
	cfg      Config
	start    time.Time
	env      []string // for every trustamp process
	data     string   // the server's data dir
	logs     string
	opampURL string
	caFile   string
	pubKey   string
	procs    []*proc
	agents   []*agentProc
}

type agentProc struct {
	name, state string
	p           *proc
	uid         string
}

const pkgType = "demo-agent"

// Run runs the scenario and stops everything it started, whatever happens.
func Run(ctx context.Context, cfg Config) (err error) {
	s := &Scenario{cfg: cfg, start: time.Now(), data: filepath.Join(cfg.Work, "server"), logs: filepath.Join(cfg.Work, "logs")}
	if err := os.MkdirAll(s.logs, 0o700); err != nil {
		return err
	}
	defer func() {
		s.say("stopping everything")
		for i := len(s.procs) - 1; i >= 0; i-- {
			s.procs[i].stop(10 * time.Second)
		}
		if err != nil {
			s.say("FAILED: %v (logs in %s)", err, s.logs)
		}
	}()
	for _, step := range []struct {
		name string
		fn   func(context.Context) error
	}{
		{"server", s.startServer},
		{"releases", s.publish},
		{"enrollment", s.enroll},
		{"first install", s.firstInstall},
		{"rotation", s.rotate},
		{"upgrade", s.upgrade},
		{"downgrade", s.downgrade},
		{"crash mid-rotation", s.crashMidRotation},
		{"revocation", s.revoke},
		{"report", s.report},
	} {
		if err := step.fn(ctx); err != nil {
			return fmt.Errorf("%s: %w", step.name, err)
		}
	}
	s.say("done in %s", time.Since(s.start).Round(100*time.Millisecond))
	return nil
}

func (s *Scenario) say(format string, args ...any) {
	el := time.Since(s.start)
	fmt.Fprintf(s.cfg.Out, "[%02d:%04.1f] %s\n", int(el.Minutes()), el.Seconds()-60*float64(int(el.Minutes())), fmt.Sprintf(format, args...))
}

// cli runs a trustamp command against the demo server.
func (s *Scenario) cli(ctx context.Context, args ...string) (string, error) {
	return run(ctx, s.env, s.cfg.Trustamp, append(args, "--data", s.data)...)
}

func (s *Scenario) cliJSON(ctx context.Context, v any, args ...string) error {
	out, err := s.cli(ctx, append(args, "-o", "json")...)
	if err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		return fmt.Errorf("%s: %w", strings.Join(args, " "), err)
	}
	return nil
}

func (s *Scenario) startServer(ctx context.Context) error {
	s.say("starting MinIO (object storage for signed releases)")
	minio, endpoint, access, secret, err := startMinIO(ctx, s.cfg.MinIO, filepath.Join(s.cfg.Work, "minio"), s.logs)
	if err != nil {
		return err
	}
	s.procs = append(s.procs, minio)
	s.env = []string{"TRUSTAMP_S3_ACCESS_KEY=" + access, "TRUSTAMP_S3_SECRET_KEY=" + secret,
		"TRUSTAMP_KEY_PASSPHRASE=demo passphrase"}
	opampPort, err := freePort()
	if err != nil {
		return err
	}
	adminPort, err := freePort()
	if err != nil {
		return err
	}
	if _, err := s.cli(ctx, "init"); err != nil {
		return err
	}
	conf := fmt.Sprintf(`opamp:
  addr: "127.0.0.1:%d"
  heartbeat_interval: 5s
admin:
  addr: "127.0.0.1:%d"
blobs:
  driver: s3
  s3:
    endpoint: "%s"
    bucket: trustamp-demo
    insecure: true
certificates:
  offer_timeout: 10s
  scan_interval: 1s
`, opampPort, adminPort, endpoint)
	if err := os.WriteFile(filepath.Join(s.data, "trustamp.yaml"), []byte(conf), 0o600); err != nil {
		return err
	}
	s.say("starting trustamp serve (OpAMP on 127.0.0.1:%d, admin API on 127.0.0.1:%d, blobs in MinIO)", opampPort, adminPort)
	srv, err := startProc(s.logs, "server", s.env, s.cfg.Trustamp, "serve", "--data", s.data)
	if err != nil {
		return err
	}
	s.procs = append(s.procs, srv)
	s.opampURL = fmt.Sprintf("wss://127.0.0.1:%d/v1/opamp", opampPort)
	s.caFile = filepath.Join(s.data, "ca", "root.pem")
	return waitFor(ctx, "the admin API", 30*time.Second, func() (bool, error) {
		select {
		case <-srv.done:
			return false, fmt.Errorf("server exited: %s", lastLines(srv.logText(), 5))
		default:
		}
		_, err := s.cli(ctx, "agents", "list")
		return err == nil, err
	})
}

// publish builds the demo agent at 1.0.0 and 1.1.0, packs, signs and
// publishes both.
func (s *Scenario) publish(ctx context.Context) error {
	keys := filepath.Join(s.cfg.Work, "keys")
	if _, err := run(ctx, s.env, s.cfg.Trustamp, "keys", "generate", "--out", keys, "--name", "release-team"); err != nil {
		return err
	}
	s.pubKey = filepath.Join(keys, "release-team.pub")
	if _, err := s.cli(ctx, "publishers", "add", "release-team", "--key", s.pubKey, "--types", pkgType); err != nil {
		return err
	}
	s.say("release team's publisher key trusted for %s", pkgType)
	platform := runtime.GOOS + "/" + runtime.GOARCH
	for _, v := range []string{"1.0.0", "1.1.0"} {
		pkg, err := s.buildPackage(ctx, v)
		if err != nil {
			return err
		}
		if _, err := run(ctx, s.env, s.cfg.Trustamp, "sign", "--key", filepath.Join(keys, "release-team.key"), pkg); err != nil {
			return err
		}
		var rel api.Release
		if err := s.cliJSON(ctx, &rel, "packages", "publish", "--type", pkgType, "--version", v, "--platform", platform, pkg); err != nil {
			return err
		}
		s.say("published %s %s (sha256 %.12s…, signed, stored in MinIO)", pkgType, v, rel.SHA256)
	}
	return nil
}

// buildPackage builds examples/demo-agent at version into a .tar.gz.
func (s *Scenario) buildPackage(ctx context.Context, version string) (string, error) {
	dir := filepath.Join(s.cfg.Work, "build", version)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "demo-agent")
	cmd := []string{"build", "-trimpath", "-ldflags", "-X main.version=" + version, "-o", bin, "./examples/demo-agent"}
	if _, err := runIn(ctx, s.cfg.RepoRoot, nil, "go", cmd...); err != nil {
		return "", err
	}
	content, err := os.ReadFile(bin)
	if err != nil {
		return "", err
	}
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	if err := tw.WriteHeader(&tar.Header{Name: "demo-agent", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(content))}); err != nil {
		return "", err
	}
	if _, err := tw.Write(content); err != nil {
		return "", err
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	if err := gz.Close(); err != nil {
		return "", err
	}
	pkg := filepath.Join(s.cfg.Work, fmt.Sprintf("demo-agent-%s.tar.gz", version))
	return pkg, os.WriteFile(pkg, buf.Bytes(), 0o600)
}

// startAgent starts (or restarts) a supervisor with its state dir.
func (s *Scenario) startAgent(a *agentProc, tokenFile string) error {
	p, err := startProc(s.logs, a.name, s.env, s.cfg.Trustamp, "agent", "--server", s.opampURL, "--ca", s.caFile,
		"--enroll-token-file", tokenFile, "--state", a.state, "--type", pkgType, "--publisher-key", s.pubKey,
		"--health-window", "2s", "--heartbeat", "2s", "--max-backoff", "20s", "--", PackageCommand)
	if err != nil {
		return err
	}
	a.p = p
	s.procs = append(s.procs, p)
	return nil
}

// PackageCommand is what the supervisors run: the demo agent binary of the
// installed version.
const PackageCommand = "{pkg}/demo-agent"

func (s *Scenario) fleet(ctx context.Context) (map[string]api.Agent, error) {
	var list []api.Agent
	if err := s.cliJSON(ctx, &list, "agents", "list"); err != nil {
		return nil, err
	}
	out := map[string]api.Agent{}
	for _, a := range list {
		out[a.UID] = a
	}
	return out, nil
}

func (s *Scenario) enroll(ctx context.Context) error {
	tok, err := s.cli(ctx, "token", "create", "--uses", "3", "--ttl", "10m", "--label", "env=demo")
	if err != nil {
		return err
	}
	tokenFile := filepath.Join(s.cfg.Work, "enroll-token")
	if err := os.WriteFile(tokenFile, []byte(strings.TrimSpace(tok)), 0o600); err != nil {
		return err
	}
	s.say("enrollment token minted (3 uses); starting 3 trustamp agent supervisors")
	for i := 1; i <= 3; i++ {
		a := &agentProc{name: fmt.Sprintf("agent-%d", i), state: filepath.Join(s.cfg.Work, fmt.Sprintf("agent-%d", i))}
		if err := s.startAgent(a, tokenFile); err != nil {
			return err
		}
		s.agents = append(s.agents, a)
	}
	err = waitFor(ctx, "3 agents enrolled and connected with mTLS", 30*time.Second, func() (bool, error) {
		for _, a := range s.agents {
			if a.uid == "" {
				b, err := os.ReadFile(filepath.Join(a.state, "uid"))
				if err != nil {
					return false, err
				}
				a.uid = strings.TrimSpace(string(b))
			}
		}
		f, err := s.fleet(ctx)
		if err != nil {
			return false, err
		}
		for _, a := range s.agents {
			if !f[a.uid].Connected || f[a.uid].CertSerial == "" {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return err
	}
	f, _ := s.fleet(ctx)
	for _, a := range s.agents {
		s.say("%s enrolled as %s, connected with certificate %s", a.name, a.uid, f[a.uid].CertSerial)
	}
	return nil
}

// installed waits until every agent named reports version installed.
func (s *Scenario) installed(ctx context.Context, version string, n int) error {
	return waitFor(ctx, fmt.Sprintf("%d agents to install %s", n, version), 60*time.Second, func() (bool, error) {
		var ro api.Rollout
		if err := s.cliJSON(ctx, &ro, "packages", "status", pkgType, version); err != nil {
			return false, err
		}
		if ro.Counts["failed"] > 0 {
			return false, fmt.Errorf("install of %s failed: %+v", version, ro.Failures)
		}
		return ro.Counts["installed"] >= n, nil
	})
}

func (s *Scenario) firstInstall(ctx context.Context) error {
	if _, err := s.cli(ctx, "packages", "promote", pkgType, "1.0.0"); err != nil {
		return err
	}
	s.say("promoted %s 1.0.0: agents download it, check SHA-256 and signature, unpack, start it", pkgType)
	if err := s.installed(ctx, "1.0.0", 3); err != nil {
		return err
	}
	s.say("all 3 agents run demo-agent 1.0.0")
	return nil
}

func (s *Scenario) rotate(ctx context.Context) error {
	before, err := s.fleet(ctx)
	if err != nil {
		return err
	}
	s.say("rotating every agent's certificate (trustamp rotate --all): the server asks each for a CSR")
	if _, err := s.cli(ctx, "rotate", "--all"); err != nil {
		return err
	}
	err = waitFor(ctx, "agents to reconnect with new certificates", 30*time.Second, func() (bool, error) {
		f, err := s.fleet(ctx)
		if err != nil {
			return false, err
		}
		for _, a := range s.agents {
			if !f[a.uid].Connected || f[a.uid].CertSerial == before[a.uid].CertSerial {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return err
	}
	after, _ := s.fleet(ctx)
	for _, a := range s.agents {
		s.say("%s rotated %s -> %s", a.name, before[a.uid].CertSerial, after[a.uid].CertSerial)
	}
	return nil
}

func (s *Scenario) upgrade(ctx context.Context) error {
	if _, err := s.cli(ctx, "packages", "promote", pkgType, "1.1.0"); err != nil {
		return err
	}
	s.say("promoted %s 1.1.0 (upgrade); killing agent-2 with SIGKILL in the middle of its install", pkgType)
	victim := s.agents[1]
	// Kill as soon as the install is under way (or done: either way the
	// restart must come back working).
	err := pollFast(ctx, "agent-2 to start installing 1.1.0", func() bool {
		_, err := os.Stat(filepath.Join(victim.state, "packages", "versions", "1.1.0"))
		return err == nil
	})
	if err != nil {
		return err
	}
	victim.p.kill()
	if err := s.startAgent(victim, filepath.Join(s.cfg.Work, "enroll-token")); err != nil {
		return err
	}
	s.say("agent-2 restarted from its state dir (no token needed)")
	if err := s.installed(ctx, "1.1.0", 3); err != nil {
		return err
	}
	s.say("all 3 agents run demo-agent 1.1.0")
	return nil
}

func (s *Scenario) downgrade(ctx context.Context) error {
	if _, err := s.cli(ctx, "packages", "promote", pkgType, "1.0.0"); err != nil {
		return err
	}
	s.say("promoted %s 1.0.0 again: a deliberate downgrade, marked Trustamp-Downgrade: from=1.1.0;to=1.0.0", pkgType)
	if err := s.installed(ctx, "1.0.0", 3); err != nil {
		return err
	}
	s.say("all 3 agents are back on demo-agent 1.0.0")
	return nil
}

// crashMidRotation kills agent-3 while its certificate rotates; restarted,
// it connects with the old or the new certificate.
func (s *Scenario) crashMidRotation(ctx context.Context) error {
	victim := s.agents[2]
	f, err := s.fleet(ctx)
	if err != nil {
		return err
	}
	before := f[victim.uid].CertSerial
	asked := strings.Count(victim.p.logText(), "server asked for a CSR")
	if _, err := s.cli(ctx, "rotate", victim.uid, "--no-wait"); err != nil {
		return err
	}
	err = pollFast(ctx, "agent-3 to be asked for a CSR", func() bool {
		return strings.Count(victim.p.logText(), "server asked for a CSR") > asked
	})
	if err != nil {
		return err
	}
	victim.p.kill()
	s.say("agent-3 killed (SIGKILL) in the middle of a certificate rotation; restarting it")
	if err := s.startAgent(victim, filepath.Join(s.cfg.Work, "enroll-token")); err != nil {
		return err
	}
	// The restarted process logs its own connection.
	connected := strings.Count(victim.p.logText(), "msg=connected")
	err = waitFor(ctx, "agent-3 to reconnect", 30*time.Second, func() (bool, error) {
		return strings.Count(victim.p.logText(), "msg=connected") > connected, nil
	})
	if err != nil {
		return err
	}
	return waitFor(ctx, "agent-3's rotation to complete", 60*time.Second, func() (bool, error) {
		f, err := s.fleet(ctx)
		if err != nil {
			return false, err
		}
		a := f[victim.uid]
		if !a.Connected || a.CertSerial == before {
			return false, nil
		}
		var certs []api.Certificate
		if err := s.cliJSON(ctx, &certs, "certs", "list", "--uid", victim.uid); err != nil {
			return false, err
		}
		for _, c := range certs {
			if c.Serial == a.CertSerial && c.Status == "confirmed" {
				s.say("agent-3 is back; its rotation completed: %s -> %s", before, a.CertSerial)
				return true, nil
			}
		}
		return false, nil
	})
}

// pollFast polls ok every 10ms for up to 10s: for catching a moment.
func pollFast(ctx context.Context, what string, ok func() bool) error {
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out waiting for %s", what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

func (s *Scenario) revoke(ctx context.Context) error {
	victim := s.agents[0]
	var res revocation.Result
	if err := s.cliJSON(ctx, &res, "revoke", victim.uid, "--reason", "keyCompromise", "--note", "demo: host compromised"); err != nil {
		return err
	}
	lat := "-"
	if res.DisconnectedAt != nil {
		lat = res.DisconnectedAt.Sub(res.RequestedAt).String()
	}
	s.say("revoked agent-1 (keyCompromise): %d certificates, %d live connections closed in %s, CRL #%d",
		len(res.Revoked), res.ClosedConnections, lat, res.CRLNumber)
	err := waitFor(ctx, "agent-1 to be refused while the others stay connected", 30*time.Second, func() (bool, error) {
		if !strings.Contains(victim.p.logText(), "certificate was revoked or it is quarantined") {
			return false, nil
		}
		f, err := s.fleet(ctx)
		if err != nil {
			return false, err
		}
		return !f[victim.uid].Connected && f[s.agents[1].uid].Connected && f[s.agents[2].uid].Connected, nil
	})
	if err != nil {
		return err
	}
	s.say("agent-1 is refused at the handshake (401) and backs off; agent-2 and agent-3 continue")
	return nil
}

func (s *Scenario) report(ctx context.Context) error {
	out, err := s.cli(ctx, "report", "revocations", "--from", "1h")
	if err != nil {
		return err
	}
	s.say("compliance report:")
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		fmt.Fprintf(s.cfg.Out, "    %s\n", line)
	}
	out, err = s.cli(ctx, "audit", "verify")
	if err != nil {
		return err
	}
	s.say("audit log verified (hash chain and signed checkpoints):")
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		fmt.Fprintf(s.cfg.Out, "    %s\n", line)
	}
	return nil
}
