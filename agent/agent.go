// Package agent is trustamp's reference agent: an OpAMP client (opamp-go)
// that keeps its own identity on disk, enrolls once with a token and a CSR,
// connects with mTLS from then on, rotates its certificate by CSR before it
// is due (or when the server asks through io.trustamp.csr), and installs
// the signed packages the server offers, after checking their hash,
// signature and downgrade mark, supervising the agent binary with rollback.
//
// It is what `trustamp agent` runs, and the reference for agent vendors:
// docs/protocol.md describes the same steps from the wire.
//
// Crash safety: every file in the state dir is replaced atomically; new
// credentials are written before the agent switches to them and become
// current only after a connection with them succeeded; a new version is
// unpacked completely before one symlink rename puts it in force, and an
// install a crash interrupted is proven or rolled back on the next start.
//
// Reconnects: every wait between attempts is "full jitter", uniform in
// [0, min(cap, base*2^n)] for the n-th failure in a row, so a fleet that
// lost its server together does not come back in waves. After a failure
// (network, server down or starting, connection lost, enrollment) base is
// 1s and cap 30s; after a refusal (certificate revoked, agent quarantined)
// base is 5s and cap Config.MaxBackoff (`--max-backoff`, default 5m). A
// successful connection starts both schedules over. A connection lost
// after it was up is retried by this loop, not by opamp-go's own reconnect
// (cenkalti/backoff v4 defaults in opamp-go v0.23.0, not configurable);
// opamp-go still makes one immediate attempt before the agent stops it,
// and keeps the retries the server paced with Retry-After (503, 429).
package agent

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/open-telemetry/opamp-go/client"
	"github.com/open-telemetry/opamp-go/client/types"
	"github.com/open-telemetry/opamp-go/protobufs"

	"github.com/trustamp/trustamp/opamp/extension"
)

// Config configures an Agent.
type Config struct {
	// ServerURL is wss://host:port/v1/opamp.
	ServerURL string
	// CAPEM verifies the server (and is what the agent trusts).
	CAPEM []byte
	// Token returns the enrollment token; it is called only when the state
	// dir holds no credentials yet.
	Token func() (string, error)
	// StateDir holds the identity and the installed packages.
	StateDir string
	// Type is the agent's package type, sent as service.name. Empty means
	// "trustamp-agent".
	Type string
	// PublisherKeys verify package signatures. Without any, every package
	// offer is refused.
	PublisherKeys []crypto.PublicKey
	// Command, when set, is run and supervised; PackagePlaceholder in its
	// arguments is replaced by the installed version's directory.
	Command []string
	// HealthWindow is how long a newly installed version must stay up to
	// be kept. Zero means 10s.
	HealthWindow time.Duration
	// RenewAt is the fraction of its life after which the certificate is
	// renewed, less a random jitter of up to 5% of its life. Zero means 2/3.
	RenewAt float64
	// AcceptServerKeys takes offers that carry a server-made private key.
	AcceptServerKeys bool
	// Heartbeat is the OpAMP heartbeat. Zero means 30s (the server may
	// change it).
	Heartbeat time.Duration
	// MaxBackoff caps the wait between connection attempts the server
	// refused (revoked or quarantined). Zero means 5m. Waits are full
	// jitter: uniform in [0, min(MaxBackoff, 5s*2^n)] after the n-th
	// refusal in a row; other failures (network, server down, connection
	// lost, enrollment) wait uniform in [0, min(30s, 1s*2^n)]. Both start
	// over after a successful connection.
	MaxBackoff time.Duration
	Logger     *slog.Logger
	// Stdout and Stderr receive the supervised command's output. Nil means
	// the agent's own.
	Stdout, Stderr io.Writer
}

// Agent is one running reference agent.
type Agent struct {
	cfg  Config
	log  *slog.Logger
	dir  stateDir
	uid  uuid.UUID
	pkgs *diskPackages
	sup  *supervisor

	mu     sync.Mutex
	creds  *credentials
	client client.OpAMPClient
	events chan event

	// afterSave, in tests, runs once an offered certificate is persisted
	// and before the switch: where a crash is most interesting.
	afterSave func()
	// int64n is the backoff's random source (uniform in [0, n)) and sleep
	// its clock; New sets math/rand/v2 and a timer, tests replace them.
	int64n func(n int64) int64
	sleep  func(ctx context.Context, d time.Duration)
}

type eventKind int

const (
	evSwitch  eventKind = iota // next credentials saved: reconnect with them
	evRefused                  // the server refused the connection (401)
	evCSR                      // send a CSR now
	evLost                     // an established connection was lost
)

type event struct {
	kind eventKind
	msg  string
}

// ErrEnrollRefused means the server will not enroll this agent with the
// token it has (unknown, used or expired token; quarantined uid).
var ErrEnrollRefused = errors.New("enrollment refused")

// New prepares an agent: it opens the state dir and the installed
// packages; nothing connects until Run.
func New(cfg Config) (*Agent, error) {
	if cfg.ServerURL == "" || len(cfg.CAPEM) == 0 || cfg.StateDir == "" {
		return nil, errors.New("agent: ServerURL, CAPEM and StateDir are required")
	}
	if cfg.Type == "" {
		cfg.Type = "trustamp-agent"
	}
	if cfg.HealthWindow <= 0 {
		cfg.HealthWindow = 10 * time.Second
	}
	if cfg.RenewAt <= 0 || cfg.RenewAt >= 1 {
		cfg.RenewAt = 2.0 / 3.0
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = 30 * time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 5 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Stdout == nil {
		cfg.Stdout = os.Stdout
	}
	if cfg.Stderr == nil {
		cfg.Stderr = os.Stderr
	}
	dir, err := openStateDir(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	uid, err := dir.uid()
	if err != nil {
		return nil, err
	}
	pkgs, err := openPackages(filepath.Join(cfg.StateDir, pkgDir), cfg.PublisherKeys)
	if err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, log: cfg.Logger.With("uid", uid.String()), dir: dir, uid: uid, pkgs: pkgs,
		events: make(chan event, 8), int64n: rand.Int64N, sleep: sleepCtx}
	a.pkgs.logf = func(f string, args ...any) { a.log.Info(fmt.Sprintf(f, args...)) }
	a.sup = &supervisor{command: cfg.Command, pkgs: pkgs, health: cfg.HealthWindow, stdout: cfg.Stdout, stderr: cfg.Stderr,
		env:  []string{"TRUSTAMP_AGENT_UID=" + uid.String()},
		logf: func(f string, args ...any) { a.log.Info(fmt.Sprintf(f, args...)) }}
	a.pkgs.install = a.install
	return a, nil
}

// UID is the agent's instance_uid.
func (a *Agent) UID() uuid.UUID { return a.uid }

// Installed is the version of the agent's package in force ("" for none).
func (a *Agent) Installed() string {
	v, _ := a.pkgs.Current()
	return v
}

// Serial is the serial (hex) of the certificate the agent connects with.
func (a *Agent) Serial() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.creds == nil {
		return ""
	}
	return a.creds.serial()
}

// Run enrolls if needed, supervises the command and stays connected until
// ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	cur, err := a.dir.load(credsFile)
	if err != nil {
		return err
	}
	next, err := a.dir.load(nextFile)
	if err != nil {
		a.log.Warn("discarding unreadable new credentials", "err", err)
		a.dir.remove(nextFile)
		next = nil
	}
	if cur == nil && next == nil {
		if cur, err = a.enroll(ctx); err != nil {
			return err
		}
	}
	a.setCreds(cur)
	if err := a.sup.start(ctx); err != nil {
		return err
	}
	defer a.sup.close()
	return a.stayConnected(ctx, next)
}

func (a *Agent) setCreds(c *credentials) {
	a.mu.Lock()
	a.creds = c
	a.mu.Unlock()
}

// stayConnected is the connection loop. next, when set, is tried before
// the current credentials and becomes current once a connection with it
// succeeded.
func (a *Agent) stayConnected(ctx context.Context, next *credentials) error {
	failed := newBackoff(failBase, failCap, a.int64n)
	refused := newBackoff(refusedBase, a.cfg.MaxBackoff, a.int64n)
	for ctx.Err() == nil {
		a.mu.Lock()
		use := a.creds
		a.mu.Unlock()
		if next != nil {
			use = next
		}
		c, err := a.connect(ctx, use)
		if err != nil && next != nil {
			a.log.Warn("new certificate did not connect; keeping the current one", "serial", next.serial(), "err", err)
			a.dir.remove(nextFile)
			next = nil
			continue
		}
		if err != nil {
			a.wait(ctx, failed, refused, err)
			continue
		}
		if next != nil {
			if err := a.dir.promote(); err != nil {
				a.log.Error("make the new certificate current", "err", err)
			}
			a.dir.remove(pendingFile)
			a.log.Info("certificate rotated", "serial", next.serial(), "not_after", next.leaf.NotAfter)
			a.setCreds(next)
			next = nil
		}
		failed.reset()
		refused.reset()
		a.log.Info("connected", "server", a.cfg.ServerURL, "serial", use.serial())
		next, err = a.session(ctx, c, use)
		c.Stop(context.Background())
		a.mu.Lock()
		a.client = nil
		a.mu.Unlock()
		if err != nil {
			a.wait(ctx, failed, refused, err)
		}
	}
	return nil
}

// errRefused is a connection the server refused with 401: the
// certificate was revoked or the agent quarantined.
var errRefused = errors.New("refused by the server (401): certificate revoked or agent quarantined")

// errLost is an established connection that broke (server restarted,
// network gone): the agent reconnects on its own schedule, not opamp-go's.
var errLost = errors.New("connection lost")

// wait sleeps before the next connection attempt, on the refused schedule
// after a refusal and on the failed one otherwise (see Config.MaxBackoff).
func (a *Agent) wait(ctx context.Context, failed, refused *backoff, err error) {
	b := failed
	if errors.Is(err, errRefused) {
		b = refused
	}
	d := b.next()
	if errors.Is(err, errRefused) {
		a.log.Error("the server refuses this agent: its certificate was revoked or it is quarantined; retrying slowly",
			"retry_in", d, "err", err)
	} else {
		a.log.Warn("connection failed", "err", err, "retry_in", d)
	}
	a.sleep(ctx, d)
}

// session serves one connection until ctx ends, new credentials are to be
// used (returned), or the connection is lost to a refusal (error).
func (a *Agent) session(ctx context.Context, c client.OpAMPClient, creds *credentials) (*credentials, error) {
	a.dropStale()
	renew := time.NewTimer(a.untilRenewal(creds))
	defer renew.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, nil
		case <-renew.C:
			a.log.Info("certificate due for renewal; sending a CSR", "serial", creds.serial(), "not_after", creds.leaf.NotAfter)
			if err := a.sendCSR(c); err != nil {
				a.log.Error("send CSR", "err", err)
			}
			// If no certificate comes, ask again.
			renew.Reset(time.Minute)
		case ev := <-a.events:
			switch ev.kind {
			case evCSR:
				a.log.Info("server asked for a CSR", "detail", ev.msg)
				if err := a.sendCSR(c); err != nil {
					a.log.Error("send CSR", "err", err)
				}
			case evRefused:
				return nil, fmt.Errorf("%w: %s", errRefused, ev.msg)
			case evLost:
				return nil, fmt.Errorf("%w: %s", errLost, ev.msg)
			case evSwitch:
				next, err := a.dir.load(nextFile)
				if err != nil || next == nil {
					a.log.Error("load new credentials", "err", err)
					continue
				}
				return next, nil
			}
		}
	}
}

// untilRenewal is how long until creds are due, with jitter so a fleet
// enrolled together does not renew together.
func (a *Agent) untilRenewal(creds *credentials) time.Duration {
	life := creds.leaf.NotAfter.Sub(creds.leaf.NotBefore)
	at := creds.renewAt(a.cfg.RenewAt).Add(-time.Duration(rand.Float64() * 0.05 * float64(life)))
	return max(time.Until(at), time.Second)
}

func (a *Agent) sendCSR(c client.OpAMPClient) error {
	_, csr, err := a.dir.newPendingKey()
	if err != nil {
		return err
	}
	return c.RequestConnectionSettings(&protobufs.ConnectionSettingsRequest{
		Opamp: &protobufs.OpAMPConnectionSettingsRequest{CertificateRequest: &protobufs.CertificateRequest{Csr: csr}}})
}

// dropStale discards the refusals and losses a previous connection's
// client reported after its session had ended (opamp-go may retry once
// before Stop), keeping the other events in order.
func (a *Agent) dropStale() {
	var keep []event
	for n := len(a.events); n > 0; n-- {
		if ev := <-a.events; ev.kind != evRefused && ev.kind != evLost {
			keep = append(keep, ev)
		}
	}
	for _, ev := range keep {
		a.notify(ev)
	}
}

func (a *Agent) notify(ev event) {
	select {
	case a.events <- ev:
	default:
	}
}

// takeOffer saves an offered certificate and has the connection loop
// switch to it. An error is reported to the server as
// ConnectionSettingsStatus FAILED.
func (a *Agent) takeOffer(s *protobufs.OpAMPConnectionSettings) error {
	saved, err := a.saveOffer(s)
	if err == nil && saved {
		a.mu.Lock()
		hook := a.afterSave
		a.mu.Unlock()
		if hook != nil {
			hook()
			return nil
		}
		a.notify(event{kind: evSwitch})
	}
	return err
}

// saveOffer checks an offered certificate against the key it must go with
// and saves both as the next credentials before anything switches. It
// reports false when the settings carry no certificate.
func (a *Agent) saveOffer(s *protobufs.OpAMPConnectionSettings) (bool, error) {
	cert := s.GetCertificate()
	if cert == nil || len(cert.Cert) == 0 {
		return false, nil
	}
	var key crypto.Signer
	if len(cert.PrivateKey) > 0 {
		if !a.cfg.AcceptServerKeys {
			return false, errors.New("this agent does not accept server-made keys")
		}
		block, _ := pem.Decode(cert.PrivateKey)
		if block == nil {
			return false, errors.New("offered private key is not PEM")
		}
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return false, fmt.Errorf("offered private key: %w", err)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return false, fmt.Errorf("offered private key %T cannot sign", k)
		}
		key = s
	} else {
		k, err := a.dir.pendingKey()
		if err != nil {
			return false, err
		}
		if k == nil {
			return false, errors.New("certificate offered without a CSR outstanding or a private key")
		}
		key = k
	}
	next, err := newCredentials(cert.Cert, key)
	if err != nil {
		return false, err
	}
	if next.leaf.Subject.CommonName != a.uid.String() {
		return false, fmt.Errorf("offered certificate is for %q, not this agent", next.leaf.Subject.CommonName)
	}
	if err := a.dir.save(nextFile, next); err != nil {
		return false, fmt.Errorf("persist new credentials: %w", err)
	}
	return true, nil
}

// connect starts an mTLS client with creds and waits until the server
// answered, or refused.
func (a *Agent) connect(ctx context.Context, creds *credentials) (client.OpAMPClient, error) {
	pair, err := creds.tlsCertificate()
	if err != nil {
		return nil, err
	}
	ready := make(chan error, 1)
	report := func(err error) {
		select {
		case ready <- err:
		default:
		}
	}
	var connected, lost sync.Once
	var isUp bool
	var upMu sync.Mutex
	up := func() bool {
		upMu.Lock()
		defer upMu.Unlock()
		return isUp
	}
	// Once up, a failed reconnect ends the session: opamp-go v0.23.0
	// would retry on its own schedule (cenkalti/backoff v4 defaults:
	// first retry immediate, then 0.5s*1.5^n +-50%, not configurable);
	// the agent's loop waits with full jitter instead.
	onLost := func(msg string) {
		if up() {
			lost.Do(func() { a.notify(event{kind: evLost, msg: msg}) })
		}
	}
	cb := types.Callbacks{
		OnConnect: func(context.Context) {
			connected.Do(func() { report(nil) })
			upMu.Lock()
			isUp = true
			upMu.Unlock()
		},
		OnConnectFailed: func(_ context.Context, err error) {
			if !strings.Contains(err.Error(), "bad handshake") {
				report(err)
				onLost(err.Error())
			}
		},
		OnError: func(_ context.Context, e *protobufs.ServerErrorResponse) {
			a.log.Warn("server error", "type", e.Type.String(), "message", e.ErrorMessage)
		},
		OnOpampConnectionSettings: func(_ context.Context, s *protobufs.OpAMPConnectionSettings) error {
			return a.takeOffer(s)
		},
		DownloadHTTPClient: func(context.Context, *protobufs.DownloadableFile) (*http.Client, error) {
			cfg, err := a.tlsConfig(&pair)
			if err != nil {
				return nil, err
			}
			return &http.Client{Timeout: 30 * time.Minute, Transport: &http.Transport{TLSClientConfig: cfg}}, nil
		},
		OnMessage: func(ctx context.Context, m *types.MessageData) {
			if m.PackagesAvailable != nil {
				a.pkgs.offer(m.PackagesAvailable)
				if m.PackageSyncer != nil {
					if err := m.PackageSyncer.Sync(ctx); err != nil {
						a.log.Error("package sync", "err", err)
					}
				}
			}
			if cm := m.CustomMessage; cm != nil && cm.Capability == extension.CSRCapability && cm.Type == extension.CSRRequestType {
				var req extension.CSRMessage
				json.Unmarshal(cm.Data, &req)
				if req.Destination != "" && req.Destination != extension.OpAMPDestination {
					a.log.Warn("server asked for a CSR for a destination this agent does not use", "destination", req.Destination)
					return
				}
				a.notify(event{kind: evCSR, msg: req.Reason})
			}
		},
	}
	onRefused := func(msg string) {
		if up() {
			a.notify(event{kind: evRefused, msg: msg})
		} else {
			report(fmt.Errorf("%w: %s", errRefused, msg))
		}
	}
	c, err := a.start(ctx, &pair, nil, cb, onRefused, onLost)
	if err != nil {
		return nil, err
	}
	t := time.NewTimer(30 * time.Second)
	defer t.Stop()
	select {
	case err = <-ready:
	case <-t.C:
		err = errors.New("no answer from the server within 30s")
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		c.Stop(context.Background())
		return nil, err
	}
	a.mu.Lock()
	a.client = c
	a.mu.Unlock()
	return c, nil
}

// enroll obtains the first certificate with the enrollment token and a
// CSR. It retries what may pass (network, server busy) and gives up on
// refusals.
func (a *Agent) enroll(ctx context.Context) (*credentials, error) {
	if a.cfg.Token == nil {
		return nil, fmt.Errorf("%w: not enrolled and no enrollment token given", ErrEnrollRefused)
	}
	token, err := a.cfg.Token()
	if err != nil {
		return nil, fmt.Errorf("enrollment token: %w", err)
	}
	b := newBackoff(failBase, failCap, a.int64n)
	for {
		creds, err := a.enrollOnce(ctx, token)
		if err == nil {
			a.log.Info("enrolled", "serial", creds.serial(), "not_after", creds.leaf.NotAfter)
			return creds, nil
		}
		if errors.Is(err, ErrEnrollRefused) || ctx.Err() != nil {
			return nil, err
		}
		d := b.next()
		a.log.Warn("enrollment failed; retrying", "err", err, "retry_in", d)
		if a.sleep(ctx, d); ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
}

func (a *Agent) enrollOnce(ctx context.Context, token string) (*credentials, error) {
	_, csr, err := a.dir.newPendingKey()
	if err != nil {
		return nil, err
	}
	result := make(chan error, 1)
	report := func(err error) {
		select {
		case result <- err:
		default:
		}
	}
	cb := types.Callbacks{
		OnConnectFailed: func(_ context.Context, err error) {
			if !strings.Contains(err.Error(), "bad handshake") {
				report(err)
			}
		},
		OnError: func(_ context.Context, e *protobufs.ServerErrorResponse) {
			if e.Type == protobufs.ServerErrorResponseType_ServerErrorResponseType_BadRequest {
				report(fmt.Errorf("%w: %s", ErrEnrollRefused, e.ErrorMessage))
				return
			}
			report(fmt.Errorf("server: %s", e.ErrorMessage))
		},
		OnOpampConnectionSettings: func(_ context.Context, s *protobufs.OpAMPConnectionSettings) error {
			saved, err := a.saveOffer(s)
			if saved || err != nil {
				report(err)
			}
			return err
		},
	}
	hdr := http.Header{}
	hdr.Set("Authorization", "Bearer "+token)
	c, err := a.start(ctx, nil, hdr, cb, func(msg string) {
		report(fmt.Errorf("%w: %s (token unknown, used up or expired)", ErrEnrollRefused, msg))
	}, func(string) {})
	if err != nil {
		return nil, err
	}
	defer c.Stop(context.Background())
	if err := c.RequestConnectionSettings(&protobufs.ConnectionSettingsRequest{
		Opamp: &protobufs.OpAMPConnectionSettingsRequest{CertificateRequest: &protobufs.CertificateRequest{Csr: csr}}}); err != nil {
		return nil, err
	}
	t := time.NewTimer(30 * time.Second)
	defer t.Stop()
	select {
	case err = <-result:
	case <-t.C:
		err = errors.New("no certificate within 30s")
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		return nil, err
	}
	// takeOffer saved the offer as the next credentials: enrollment makes
	// them current at once (there is nothing older to fall back to).
	if err := a.dir.promote(); err != nil {
		return nil, err
	}
	a.dir.remove(pendingFile)
	return a.dir.load(credsFile)
}

// refusalLogger passes opamp-go's logs on, and reports the ones that carry
// an HTTP 401: opamp-go v0.23.0 tells its callbacks about a refused
// handshake without the status, and only the logger sees it.
type refusalLogger struct {
	log     *slog.Logger
	refused func(string)
	// failed gets the other refused handshakes (a 502 from a proxy) and a
	// broken connection (the server went away without closing it).
	failed func(string)
}

func (l refusalLogger) Debugf(_ context.Context, format string, args ...any) {
	l.log.Debug(fmt.Sprintf(format, args...))
}

func (l refusalLogger) Errorf(_ context.Context, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if strings.Contains(msg, "status=401") || strings.Contains(msg, "401 Unauthorized") {
		l.refused(msg)
		return
	}
	// A 503 or 429 carries the server's Retry-After, which only opamp-go
	// sees and honours: its retry is left to it.
	withRetryAfter := strings.Contains(msg, "status=503") || strings.Contains(msg, "status=429")
	if strings.Contains(msg, "Unexpected error while receiving") ||
		strings.Contains(msg, "Server responded with status=") && !withRetryAfter {
		l.failed(msg)
	}
	l.log.Debug("opamp client", "msg", msg)
}

// start configures and starts an opamp-go WebSocket client: with a client
// certificate (mTLS, packages accepted) or with a bearer header
// (enrollment).
func (a *Agent) start(ctx context.Context, cert *tls.Certificate, hdr http.Header, cb types.Callbacks, refused, failed func(string)) (client.OpAMPClient, error) {
	tlsCfg, err := a.tlsConfig(cert)
	if err != nil {
		return nil, err
	}
	c := client.NewWebSocket(refusalLogger{log: a.log, refused: refused, failed: failed})
	caps := protobufs.AgentCapabilities_AgentCapabilities_ReportsStatus |
		protobufs.AgentCapabilities_AgentCapabilities_AcceptsOpAMPConnectionSettings |
		protobufs.AgentCapabilities_AgentCapabilities_ReportsConnectionSettingsStatus |
		protobufs.AgentCapabilities_AgentCapabilities_ReportsHeartbeat
	var (
		provider  types.PackagesStateProvider
		startCaps protobufs.AgentCapabilities
	)
	if cert != nil {
		// opamp-go v0.23.0 takes AcceptsPackages only through the
		// deprecated StartSettings.Capabilities (see OPAMP-NOTES).
		caps |= protobufs.AgentCapabilities_AgentCapabilities_AcceptsPackages |
			protobufs.AgentCapabilities_AgentCapabilities_ReportsPackageStatuses
		provider, startCaps = a.pkgs, caps
	} else if err := c.SetCapabilities(&caps); err != nil {
		return nil, err
	}
	if err := c.SetCustomCapabilities(&protobufs.CustomCapabilities{Capabilities: []string{extension.CSRCapability}}); err != nil {
		return nil, err
	}
	if err := c.SetAgentDescription(a.description()); err != nil {
		return nil, err
	}
	hb := a.cfg.Heartbeat
	err = c.Start(ctx, types.StartSettings{
		OpAMPServerURL:        a.cfg.ServerURL,
		Header:                hdr,
		TLSConfig:             tlsCfg,
		InstanceUid:           types.InstanceUid(a.uid),
		Callbacks:             cb,
		PackagesStateProvider: provider,
		Capabilities:          startCaps,
		HeartbeatInterval:     &hb,
	})
	if err != nil {
		return nil, fmt.Errorf("start opamp client: %w", err)
	}
	return c, nil
}

// description says what the agent is: its type and version (what package
// targeting keys on) and platform.
func (a *Agent) description() *protobufs.AgentDescription {
	str := func(k, v string) *protobufs.KeyValue {
		return &protobufs.KeyValue{Key: k, Value: &protobufs.AnyValue{Value: &protobufs.AnyValue_StringValue{StringValue: v}}}
	}
	d := &protobufs.AgentDescription{
		IdentifyingAttributes: []*protobufs.KeyValue{str("service.name", a.cfg.Type), str("service.instance.id", a.uid.String())},
		NonIdentifyingAttributes: []*protobufs.KeyValue{str("os.type", runtime.GOOS), str("host.arch", runtime.GOARCH),
			str("trustamp.agent", "reference")},
	}
	if v, _ := a.pkgs.Current(); v != "" {
		d.IdentifyingAttributes = append(d.IdentifyingAttributes, str("service.version", v))
	}
	if h, err := os.Hostname(); err == nil {
		d.NonIdentifyingAttributes = append(d.NonIdentifyingAttributes, str("host.name", h))
	}
	return d
}

// install is the packages provider's last step: switch, supervise, keep
// or roll back; then tell the server the new version.
func (a *Agent) install(ctx context.Context, version string) error {
	if err := a.sup.install(ctx, version); err != nil {
		return err
	}
	a.mu.Lock()
	c := a.client
	a.mu.Unlock()
	if c != nil {
		if err := c.SetAgentDescription(a.description()); err != nil {
			a.log.Warn("update description", "err", err)
		}
	}
	return nil
}

func (a *Agent) tlsConfig(cert *tls.Certificate) (*tls.Config, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(a.cfg.CAPEM) {
		return nil, errors.New("agent: CA bundle holds no certificate")
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return cfg, nil
}
