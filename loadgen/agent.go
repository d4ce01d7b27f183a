// Package loadgen simulates OpAMP agents with opamp-go's own client: enroll
// with a token and a CSR, reconnect with mTLS, heartbeat. `trustamp loadgen`
// runs many of them to measure the server; integration tests use one at a
// time as a real peer.
package loadgen

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/open-telemetry/opamp-go/client"
	"github.com/open-telemetry/opamp-go/client/types"
	"github.com/open-telemetry/opamp-go/protobufs"

	"github.com/trustamp/trustamp/opamp/extension"
)

// AgentConfig configures a simulated agent.
type AgentConfig struct {
	// ServerURL is wss://host:port/v1/opamp (WebSocket) or
	// https://host:port/v1/opamp (plain HTTP).
	ServerURL string
	// CAPEM verifies the server.
	CAPEM []byte
	// Heartbeat is the client's heartbeat (and, over HTTP, polling)
	// interval. Zero means 30s.
	Heartbeat time.Duration
	// Logger receives opamp-go's logs. Nil discards them.
	Logger types.Logger
	// CSRCapability declares the io.trustamp.csr custom capability: asked
	// for a CSR, the agent makes a fresh key and sends one.
	CSRCapability bool
	// AcceptServerKeys accepts offers that carry a server-made private key;
	// otherwise such offers are refused (reported FAILED).
	AcceptServerKeys bool
	// OnRotated is called after the agent reconnected with a new
	// certificate, with its serial (hex).
	OnRotated func(serial string)
	// Destinations the agent can use besides OpAMP (own_metrics,
	// own_traces, own_logs, or other connection names): it declares the
	// matching capability and takes certificates offered for them.
	Destinations []string
	// OnDestinationCert is called when the agent took a certificate for a
	// destination.
	OnDestinationCert func(DestinationCert)
	// Packages, when set, makes the agent accept package offers.
	Packages *PackagesConfig
}

// DestinationCert is a certificate an agent took for another destination.
type DestinationCert struct {
	Destination string
	Endpoint    string
	Headers     map[string]string
	Serial      string
	CertPEM     []byte
}

// Agent is one simulated fleet member.
type Agent struct {
	cfg     AgentConfig
	UID     uuid.UUID
	key     *ecdsa.PrivateKey
	CertPEM []byte // set by Enroll

	mu         sync.Mutex
	client     client.OpAMPClient
	claim      uuid.UUID          // instance_uid presented on mTLS connections
	onError    func(*ServerError) // later server errors
	pendingKey *ecdsa.PrivateKey  // key of a CSR sent, awaiting its certificate
	switching  bool
	destKeys   map[string]*ecdsa.PrivateKey // keys of destination CSRs sent
	pkgs       *memPackages                 // nil unless cfg.Packages
}

// NewAgent makes an agent with a fresh ECDSA P-256 key and a UUIDv7 uid.
func NewAgent(cfg AgentConfig) (*Agent, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = nopLogger{}
	}
	a := &Agent{cfg: cfg, UID: uuid.Must(uuid.NewV7()), key: key}
	if cfg.Packages != nil {
		a.pkgs = newMemPackages(cfg.Packages)
	}
	return a, nil
}

// ServerError is a ServerErrorResponse the server answered with.
type ServerError struct {
	Type    protobufs.ServerErrorResponseType
	Message string
}

func (e *ServerError) Error() string {
	return fmt.Sprintf("server error %s: %s", strings.TrimPrefix(e.Type.String(), "ServerErrorResponseType_"), e.Message)
}

// ErrConnectFailed wraps a failed connection attempt (401, TLS, refused).
var ErrConnectFailed = errors.New("connect failed")

// Enroll connects with the enrollment token, sends a CSR for its uid and
// waits for the certificate offer, then disconnects.
func (a *Agent) Enroll(ctx context.Context, token string) error {
	csr, err := a.csr()
	if err != nil {
		return err
	}
	result := make(chan error, 1)
	report := func(err error) {
		select {
		case result <- err:
		default:
		}
	}
	hdr := http.Header{}
	hdr.Set("Authorization", "Bearer "+token)
	c, err := a.startAs(ctx, a.UID, hdr, nil, report, types.Callbacks{
		OnConnectFailed: func(_ context.Context, err error) { reportConnectFailed(report, err) },
		OnError: func(_ context.Context, e *protobufs.ServerErrorResponse) {
			report(&ServerError{Type: e.Type, Message: e.ErrorMessage})
		},
		OnOpampConnectionSettings: func(_ context.Context, s *protobufs.OpAMPConnectionSettings) error {
			if s.GetCertificate() == nil || len(s.Certificate.Cert) == 0 {
				return errors.New("offer without a certificate")
			}
			if len(s.Certificate.PrivateKey) != 0 {
				report(errors.New("server sent a private key for an agent that sent a CSR"))
				return nil
			}
			a.mu.Lock()
			a.CertPEM = s.Certificate.Cert
			a.mu.Unlock()
			report(nil)
			return nil
		},
	})
	if err != nil {
		return err
	}
	defer c.Stop(context.WithoutCancel(ctx))
	if err := c.RequestConnectionSettings(&protobufs.ConnectionSettingsRequest{
		Opamp: &protobufs.OpAMPConnectionSettingsRequest{CertificateRequest: &protobufs.CertificateRequest{Csr: csr}},
	}); err != nil {
		return err
	}
	select {
	case err := <-result:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Connect reconnects with the enrolled certificate (mTLS), presenting
// claimUID as its instance_uid (the agent's own uid unless a test
// impersonates another), and returns once the server answered. The
// connection stays up, heartbeating and following rotations, until Stop.
// onError, if set, receives later server errors.
func (a *Agent) Connect(ctx context.Context, claimUID uuid.UUID, onError func(*ServerError)) error {
	a.mu.Lock()
	a.claim, a.onError = claimUID, onError
	certPEM, key := a.CertPEM, a.key
	a.mu.Unlock()
	if certPEM == nil {
		return errors.New("loadgen: not enrolled")
	}
	c, err := a.connectWith(ctx, certPEM, key)
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.client = c
	a.mu.Unlock()
	return nil
}

// connectWith starts an mTLS client with the given credentials and waits
// for the server's answer.
func (a *Agent) connectWith(ctx context.Context, certPEM []byte, key *ecdsa.PrivateKey) (client.OpAMPClient, error) {
	pair, err := tls.X509KeyPair(certPEM, pemKey(key))
	if err != nil {
		return nil, fmt.Errorf("loadgen: certificate: %w", err)
	}
	ready := make(chan error, 1)
	report := func(err error) {
		select {
		case ready <- err:
		default:
		}
	}
	a.mu.Lock()
	claim, onError := a.claim, a.onError
	a.mu.Unlock()
	var c client.OpAMPClient
	c, err = a.startAs(ctx, claim, nil, &pair, report, types.Callbacks{
		OnConnect:       func(context.Context) { report(nil) },
		OnConnectFailed: func(_ context.Context, err error) { reportConnectFailed(report, err) },
		OnError: func(_ context.Context, e *protobufs.ServerErrorResponse) {
			se := &ServerError{Type: e.Type, Message: e.ErrorMessage}
			report(se)
			if onError != nil {
				onError(se)
			}
		},
		DownloadHTTPClient: func(context.Context, *protobufs.DownloadableFile) (*http.Client, error) {
			return a.downloadClient()
		},
		OnMessage: func(ctx context.Context, m *types.MessageData) {
			if m.PackagesAvailable != nil && a.pkgs != nil {
				if a.cfg.Packages.OnOffer != nil {
					a.cfg.Packages.OnOffer(m.PackagesAvailable)
				}
				a.pkgs.offer(m.PackagesAvailable)
				if m.PackageSyncer != nil {
					if err := m.PackageSyncer.Sync(ctx); err != nil {
						a.cfg.Logger.Errorf(ctx, "package sync: %v", err)
					}
				}
			}
			if cm := m.CustomMessage; a.cfg.CSRCapability && cm != nil && cm.Capability == extension.CSRCapability && cm.Type == extension.CSRRequestType {
				var req extension.CSRMessage
				json.Unmarshal(cm.Data, &req)
				if req.Destination == "" || req.Destination == extension.OpAMPDestination {
					go a.RequestRotation()
				} else {
					go a.requestDestinationCSR(req.Rotation, req.Destination)
				}
			}
		},
		OnOpampConnectionSettings: func(_ context.Context, s *protobufs.OpAMPConnectionSettings) error {
			return a.takeOffer(s)
		},
		OnConnectionSettings: func(_ context.Context, o *protobufs.ConnectionSettingsOffers) error {
			return a.takeDestinationOffers(o)
		},
	})
	if err != nil {
		return nil, err
	}
	select {
	case err := <-ready:
		if err != nil {
			c.Stop(context.Background())
			return nil, err
		}
		return c, nil
	case <-ctx.Done():
		c.Stop(context.Background())
		return nil, ctx.Err()
	}
}

// RequestRotation makes a fresh key and sends a CSR on the live connection,
// as an agent renewing on its own (or asked to through io.trustamp.csr).
func (a *Agent) RequestRotation() error {
	key, csr, err := newKeyAndCSR()
	if err != nil {
		return err
	}
	a.mu.Lock()
	c := a.client
	a.pendingKey = key
	a.mu.Unlock()
	if c == nil {
		return errors.New("loadgen: not connected")
	}
	return c.RequestConnectionSettings(&protobufs.ConnectionSettingsRequest{Opamp: &protobufs.OpAMPConnectionSettingsRequest{
		CertificateRequest: &protobufs.CertificateRequest{Csr: csr},
	}})
}

// takeOffer checks an offered certificate against the key it must go with
// and switches to it in the background (opamp-go's callback must return
// before the client can be stopped). An error is reported to the server as
// ConnectionSettingsStatus FAILED.
func (a *Agent) takeOffer(s *protobufs.OpAMPConnectionSettings) error {
	cert := s.GetCertificate()
	if cert == nil || len(cert.Cert) == 0 {
		return nil // not a certificate offer
	}
	a.mu.Lock()
	key := a.pendingKey
	a.mu.Unlock()
	if len(cert.PrivateKey) > 0 {
		if !a.cfg.AcceptServerKeys {
			return errors.New("this agent does not accept server-made keys")
		}
		block, _ := pem.Decode(cert.PrivateKey)
		if block == nil {
			return errors.New("offered private key is not PEM")
		}
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return fmt.Errorf("offered private key: %w", err)
		}
		ek, ok := k.(*ecdsa.PrivateKey)
		if !ok {
			return fmt.Errorf("offered private key is %T, want ECDSA", k)
		}
		key = ek
	}
	if key == nil {
		return errors.New("certificate offered without a CSR outstanding or a private key")
	}
	if _, err := tls.X509KeyPair(cert.Cert, pemKey(key)); err != nil {
		return fmt.Errorf("offered certificate does not match the key: %w", err)
	}
	go a.switchTo(cert.Cert, key)
	return nil
}

// switchTo reconnects with new credentials and keeps them only if the new
// connection works; otherwise it goes back to the old ones.
func (a *Agent) switchTo(certPEM []byte, key *ecdsa.PrivateKey) {
	a.mu.Lock()
	if a.switching {
		a.mu.Unlock()
		return
	}
	a.switching = true
	old, oldCert, oldKey := a.client, a.CertPEM, a.key
	a.mu.Unlock()
	defer func() { a.mu.Lock(); a.switching = false; a.mu.Unlock() }()
	if old != nil {
		old.Stop(context.Background())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := a.connectWith(ctx, certPEM, key)
	if err != nil {
		c, err = a.connectWith(ctx, oldCert, oldKey)
		if err == nil {
			a.mu.Lock()
			a.client = c
			a.mu.Unlock()
		}
		return
	}
	a.mu.Lock()
	a.client, a.CertPEM, a.key, a.pendingKey = c, certPEM, key, nil
	a.mu.Unlock()
	if a.cfg.OnRotated != nil {
		block, _ := pem.Decode(certPEM)
		if leaf, err := x509.ParseCertificate(block.Bytes); err == nil {
			a.cfg.OnRotated(fmt.Sprintf("%x", leaf.SerialNumber.Bytes()))
		}
	}
}

// requestDestinationCSR makes a key for a destination and sends its CSR as
// an io.trustamp.csr custom message of type "csr".
func (a *Agent) requestDestinationCSR(rotation, dest string) error {
	key, csr, err := newKeyAndCSR()
	if err != nil {
		return err
	}
	data, _ := json.Marshal(extension.CSRMessage{Rotation: rotation, Destination: dest, CSR: string(csr)})
	a.mu.Lock()
	c := a.client
	if a.destKeys == nil {
		a.destKeys = map[string]*ecdsa.PrivateKey{}
	}
	a.destKeys[dest] = key
	a.mu.Unlock()
	if c == nil {
		return errors.New("loadgen: not connected")
	}
	_, err = c.SendCustomMessage(&protobufs.CustomMessage{Capability: extension.CSRCapability, Type: extension.CSRReplyType, Data: data})
	return err
}

// takeDestinationOffers takes certificates offered for other destinations,
// checking each against the key it must go with.
func (a *Agent) takeDestinationOffers(o *protobufs.ConnectionSettingsOffers) error {
	type offered struct {
		endpoint string
		headers  *protobufs.Headers
		cert     *protobufs.TLSCertificate
	}
	offers := map[string]offered{}
	for name, t := range map[string]*protobufs.TelemetryConnectionSettings{"own_metrics": o.OwnMetrics, "own_traces": o.OwnTraces, "own_logs": o.OwnLogs} {
		if t != nil {
			offers[name] = offered{t.DestinationEndpoint, t.Headers, t.Certificate}
		}
	}
	for name, oc := range o.OtherConnections {
		offers[name] = offered{oc.DestinationEndpoint, oc.Headers, oc.Certificate}
	}
	for name, off := range offers {
		if off.cert == nil {
			continue
		}
		a.mu.Lock()
		key := a.destKeys[name]
		a.mu.Unlock()
		keyPEM := off.cert.PrivateKey
		if len(keyPEM) > 0 && !a.cfg.AcceptServerKeys {
			return fmt.Errorf("%s: this agent does not accept server-made keys", name)
		}
		if len(keyPEM) == 0 {
			if key == nil {
				return fmt.Errorf("%s: certificate offered without a CSR outstanding", name)
			}
			keyPEM = pemKey(key)
		}
		if _, err := tls.X509KeyPair(off.cert.Cert, keyPEM); err != nil {
			return fmt.Errorf("%s: offered certificate does not match the key: %w", name, err)
		}
		dc := DestinationCert{Destination: name, Endpoint: off.endpoint, Headers: map[string]string{}, CertPEM: off.cert.Cert}
		for _, h := range off.headers.GetHeaders() {
			dc.Headers[h.Key] = h.Value
		}
		if block, _ := pem.Decode(off.cert.Cert); block != nil {
			if leaf, err := x509.ParseCertificate(block.Bytes); err == nil {
				dc.Serial = fmt.Sprintf("%x", leaf.SerialNumber.Bytes())
			}
		}
		if a.cfg.OnDestinationCert != nil {
			a.cfg.OnDestinationCert(dc)
		}
	}
	return nil
}

// Cert returns the certificate the agent currently uses.
func (a *Agent) Cert() []byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.CertPEM
}

func pemKey(k *ecdsa.PrivateKey) []byte {
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// Stop disconnects.
func (a *Agent) Stop(ctx context.Context) error {
	a.mu.Lock()
	c := a.client
	a.client = nil
	a.mu.Unlock()
	if c == nil {
		return nil
	}
	return c.Stop(ctx)
}

// reportConnectFailed reports a failed connection, except a WebSocket "bad
// handshake": opamp-go logs the HTTP status for that right after, and the
// status (401, 429) is what callers need (see statusLogger).
func reportConnectFailed(report func(error), err error) {
	if strings.Contains(err.Error(), "bad handshake") {
		return
	}
	report(fmt.Errorf("%w: %v", ErrConnectFailed, err))
}

// statusLogger passes opamp-go's logs on and turns the ones that carry an
// HTTP status of a refused connection into ErrConnectFailed: opamp-go
// v0.23.0 reports a 401 to neither callback (HTTP) or without its status
// (WebSocket), only to the logger.
type statusLogger struct {
	types.Logger
	report func(error)
}

func (l statusLogger) Errorf(ctx context.Context, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if strings.Contains(msg, "Server responded with status=") || strings.Contains(msg, "invalid response from server:") {
		l.report(fmt.Errorf("%w: %s", ErrConnectFailed, msg))
	}
	l.Logger.Errorf(ctx, "%s", msg)
}

func (a *Agent) startAs(ctx context.Context, uid uuid.UUID, hdr http.Header, cert *tls.Certificate, report func(error), cb types.Callbacks) (client.OpAMPClient, error) {
	tlsCfg, err := a.tlsConfig(cert)
	if err != nil {
		return nil, err
	}
	logger := statusLogger{Logger: a.cfg.Logger, report: report}
	var c client.OpAMPClient
	if strings.HasPrefix(a.cfg.ServerURL, "https://") {
		hc := client.NewHTTP(logger)
		hc.SetPollingInterval(a.cfg.Heartbeat)
		c = hc
	} else {
		c = client.NewWebSocket(logger)
	}
	caps := protobufs.AgentCapabilities_AgentCapabilities_ReportsStatus |
		protobufs.AgentCapabilities_AgentCapabilities_AcceptsOpAMPConnectionSettings |
		protobufs.AgentCapabilities_AgentCapabilities_ReportsConnectionSettingsStatus |
		protobufs.AgentCapabilities_AgentCapabilities_ReportsHeartbeat
	for _, d := range a.cfg.Destinations {
		caps |= extension.DestinationCapability(d)
	}
	var (
		provider  types.PackagesStateProvider
		startCaps protobufs.AgentCapabilities
	)
	if a.pkgs != nil && cert != nil {
		// opamp-go v0.23.0 refuses AcceptsPackages in SetCapabilities
		// before Start (no PackagesStateProvider yet) and refuses a
		// provider at Start without it: the deprecated StartSettings field
		// is the only way in.
		caps |= protobufs.AgentCapabilities_AgentCapabilities_AcceptsPackages |
			protobufs.AgentCapabilities_AgentCapabilities_ReportsPackageStatuses
		provider, startCaps = a.pkgs, caps
	} else if err := c.SetCapabilities(&caps); err != nil {
		return nil, err
	}
	if a.cfg.CSRCapability {
		if err := c.SetCustomCapabilities(&protobufs.CustomCapabilities{Capabilities: []string{extension.CSRCapability}}); err != nil {
			return nil, err
		}
	}
	if err := c.SetAgentDescription(a.description(uid)); err != nil {
		return nil, err
	}
	hb := a.cfg.Heartbeat
	err = c.Start(ctx, types.StartSettings{
		OpAMPServerURL:        a.cfg.ServerURL,
		Header:                hdr,
		TLSConfig:             tlsCfg,
		InstanceUid:           types.InstanceUid(uid),
		Callbacks:             cb,
		PackagesStateProvider: provider,
		Capabilities:          startCaps,
		HeartbeatInterval:     &hb,
	})
	if err != nil {
		return nil, fmt.Errorf("loadgen: start opamp client: %w", err)
	}
	return c, nil
}

func (a *Agent) description(uid uuid.UUID) *protobufs.AgentDescription {
	str := func(k, v string) *protobufs.KeyValue {
		return &protobufs.KeyValue{Key: k, Value: &protobufs.AnyValue{Value: &protobufs.AnyValue_StringValue{StringValue: v}}}
	}
	d := &protobufs.AgentDescription{IdentifyingAttributes: []*protobufs.KeyValue{
		str("service.name", "trustamp-loadgen"), str("service.instance.id", uid.String()),
	}}
	if p := a.cfg.Packages; p != nil {
		d.IdentifyingAttributes[0] = str("service.name", p.Type)
		d.IdentifyingAttributes = append(d.IdentifyingAttributes, str("service.version", p.Version))
		d.NonIdentifyingAttributes = []*protobufs.KeyValue{str("os.type", p.OS), str("host.arch", p.Arch)}
	}
	return d
}

// downloadClient is an HTTP client with the agent's current mTLS
// credentials: trustamp's download endpoint wants them.
func (a *Agent) downloadClient() (*http.Client, error) {
	a.mu.Lock()
	certPEM, key := a.CertPEM, a.key
	a.mu.Unlock()
	pair, err := tls.X509KeyPair(certPEM, pemKey(key))
	if err != nil {
		return nil, fmt.Errorf("loadgen: certificate: %w", err)
	}
	cfg, err := a.tlsConfig(&pair)
	if err != nil {
		return nil, err
	}
	return &http.Client{Timeout: 5 * time.Minute, Transport: &http.Transport{TLSClientConfig: cfg}}, nil
}

// tlsConfig trusts the configured CA bundle and presents cert when set.
func (a *Agent) tlsConfig(cert *tls.Certificate) (*tls.Config, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(a.cfg.CAPEM) {
		return nil, errors.New("loadgen: CA bundle holds no certificate")
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return cfg, nil
}

// KeyPEM returns the agent's current private key as PKCS#8 PEM (tests build
// TLS clients from it).
func (a *Agent) KeyPEM() []byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	return pemKey(a.key)
}

func (a *Agent) csr() ([]byte, error) { return csrFor(a.key) }

// newKeyAndCSR makes an ECDSA P-256 key and a CSR for it (no subject: the
// server sets the identity).
func newKeyAndCSR() (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	csr, err := csrFor(key)
	return key, csr, err
}

func csrFor(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

type nopLogger struct{}

func (nopLogger) Debugf(context.Context, string, ...any) {}
func (nopLogger) Errorf(context.Context, string, ...any) {}
