package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/trustamp/trustamp/api"
	"github.com/trustamp/trustamp/audit"
	"github.com/trustamp/trustamp/ca"
	"github.com/trustamp/trustamp/config"
	"github.com/trustamp/trustamp/datadir"
	"github.com/trustamp/trustamp/internal/vaultclient"
	"github.com/trustamp/trustamp/opamp"
	"github.com/trustamp/trustamp/policies"
	"github.com/trustamp/trustamp/release"
	"github.com/trustamp/trustamp/revocation"
	"github.com/trustamp/trustamp/signing"
	"github.com/trustamp/trustamp/storage/blob"
	"github.com/trustamp/trustamp/storage/state"
)

// AssembleOptions adjusts Assemble for tests and the CLI.
type AssembleOptions struct {
	// Logger receives logs. Nil means slog.Default().
	Logger *slog.Logger
	// Notices receives one-line notices for the operator (where the admin
	// API is). Nil means none.
	Notices io.Writer
	// OpAMPListener and AdminListener replace the configured addresses.
	OpAMPListener, AdminListener net.Listener
	// OnListening is called after the local CLI credential is written.
	OnListening func(opamp, admin net.Addr)
	// Clock returns the current time. Nil means time.Now.
	Clock func() time.Time
}

// Assemble builds the whole server from an opened data dir: the composition
// root, where every package is wired to the others.
func Assemble(ctx context.Context, d *datadir.Dir, o AssembleOptions) (*Server, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	key, err := d.AuditKey(ctx)
	if err != nil {
		return nil, err
	}
	auditLog := audit.New(audit.Config{Key: key, Logger: o.Logger, Clock: o.Clock, Anchor: d})
	crlURL, ocspURL := revocationURLs(d.Config)
	vc, err := openVault(d)
	if err != nil {
		return nil, err
	}
	issuers, err := openIssuers(d, vc)
	if err != nil {
		return nil, err
	}
	authority, err := ca.New(ctx, ca.Config{Keys: d.Keys, Files: d.Layout.CAFiles(), TrustDomain: d.Config.TrustDomain,
		CRLURL: crlURL, OCSPURL: ocspURL, IntermediateKMS: d.Config.Certificates.IntermediateKey, OpenKMS: signing.OpenKMSKey,
		Issuers: issuers, Clock: o.Clock})
	if err != nil {
		return nil, err
	}
	listenerCert := &listenerCert{ca: authority, names: d.Config.OpAMP.ServerNames}
	if err := listenerCert.renew(ctx); err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		api.NewCertCollector(d.Store, o.Clock))
	metrics := opamp.NewMetrics()
	if err := metrics.Register(reg); err != nil {
		return nil, err
	}
	revMetrics := revocation.NewMetrics()
	if err := revMetrics.Register(reg); err != nil {
		return nil, err
	}
	certs := d.Config.Certificates
	profiles := Profiles(certs.Profiles)
	revocations, err := revocation.New(revocation.Config{Store: d.Store, Audit: auditLog, CA: authority,
		Forward: func(ctx context.Context, serial, profile string) error {
			return authority.RevokeWith(ctx, profiles[profile].Issuer, serial)
		},
		CRLNextUpdate: d.Config.CRL.NextUpdate, OCSPValidity: d.Config.OCSP.Validity,
		Metrics: revMetrics, Logger: o.Logger, Clock: o.Clock})
	if err != nil {
		return nil, err
	}
	for _, p := range profiles {
		if err := p.Validate(); err != nil {
			return nil, fmt.Errorf("certificates.profiles: %w", err)
		}
	}
	blobs, err := openBlobs(ctx, d)
	if err != nil {
		return nil, err
	}
	relMetrics := release.NewMetrics()
	if err := relMetrics.Register(reg); err != nil {
		return nil, err
	}
	pc := d.Config.Packages
	var presign time.Duration
	if d.Config.Blobs.Driver == "s3" && *pc.Presign {
		presign = pc.PresignExpiry
	}
	// The policy source is made once the services that check and apply a
	// set exist; until then (before serving) they see no policies.
	var pol *policies.Source
	currentPolicies := func() *policies.Set {
		if pol == nil {
			return nil
		}
		return pol.Current()
	}
	releases, err := release.New(release.Config{Policies: currentPolicies, Store: d.Store, Audit: auditLog, Blobs: blobs,
		RecheckAfter: pc.RecheckInterval, Presign: presign, DownloadBaseURL: pc.DownloadBaseURL,
		HaltFailureRate: pc.HaltFailureRate, HaltMinFailures: pc.HaltMinFailures,
		Metrics: relMetrics, Logger: o.Logger, Clock: o.Clock})
	if err != nil {
		return nil, err
	}
	op, err := opamp.New(opamp.Config{
		Store: d.Store, CA: authority, Audit: auditLog, ReplicaID: d.Config.OpAMP.ReplicaID,
		HeartbeatInterval:        d.Config.OpAMP.HeartbeatInterval,
		MaxConcurrentEnrollments: d.Config.OpAMP.MaxConcurrentEnrollments,
		EnrollTimeout:            d.Config.OpAMP.EnrollTimeout,
		ReadTimeout:              d.Config.OpAMP.ReadTimeout,
		Limits:                   opampLimits(d.Config.OpAMP.Limits),
		Profiles:                 profiles,
		Destinations:             destinations(d.Config.Destinations),
		Profile:                  certs.Profile,
		RotationRate:             certs.RotationRate,
		ScanInterval:             certs.ScanInterval,
		OfferTimeout:             certs.OfferTimeout,
		AgentCSRInterval:         certs.AgentCSRInterval,
		Revocations:              revocations,
		Packages:                 releases,
		Policies:                 currentPolicies,
		Events: revocation.NewAuto(revocation.AutoConfig{Service: revocations, Policies: currentPolicies,
			Logger: o.Logger, Clock: o.Clock}),
		Metrics: metrics, Logger: o.Logger, Clock: o.Clock,
	})
	if err != nil {
		return nil, err
	}
	revocations.SetConnections(op)
	pol, err = openPolicies(ctx, d, auditLog, op, releases, o.Logger)
	if err != nil {
		return nil, err
	}
	destNames := make([]string, 0, len(d.Config.Destinations))
	for name := range d.Config.Destinations {
		destNames = append(destNames, name)
	}
	sort.Strings(destNames)
	admin := api.New(api.Config{Store: d.Store, Audit: auditLog, CA: listenerCert, Destinations: destNames,
		Revocations: revocations, Releases: releases,
		Policies: pol, Targets: releases, CheckPolicies: op.CheckPolicies, DefaultProfile: certs.Profile,
		PolicyLimits: policyLimits(d.Config.Policies), SimulateCostLimit: d.Config.Policies.SimulateCostLimit,
		MaxBodyBytes: d.Config.Admin.MaxBodyBytes, MaxUploadBytes: d.Config.Admin.MaxUploadBytes,
		Gatherer: reg, Logger: o.Logger, Clock: o.Clock})
	srv, err := New(Config{
		OpAMPAddr:          d.Config.OpAMP.Addr,
		OpAMPListener:      o.OpAMPListener,
		AdminAddr:          d.Config.Admin.Addr,
		AdminListener:      o.AdminListener,
		Store:              d.Store,
		AuditKey:           key,
		CheckpointInterval: d.Config.Audit.CheckpointInterval,
		AuditAnchor:        d,
		Logger:             o.Logger,
		OpAMP:              op,
		TLS:                listenerCert.get,
		CABundle:           authority.RootPEM,
		Revocation:         revocations,
		Downloads:          releases.NewDownloads(op.AuthorizeAgent),
		Policies:           pol,
		Dependencies:       dependencies(vc),
		Admin:              admin,
		OnListening: func(opampAddr, adminAddr net.Addr) {
			url := "https://" + dialable(adminAddr)
			if err := d.WriteLocalCredential(ctx, auditLog, url, o.Clock()); err != nil {
				o.Logger.Error("write local CLI credential", "err", err)
			} else if o.Notices != nil {
				fmt.Fprintf(o.Notices, "admin API %s (local CLI credential in %s)\n", url, d.Layout.LocalCredential())
			}
			if o.OnListening != nil {
				o.OnListening(opampAddr, adminAddr)
			}
		},
	})
	if err != nil {
		return nil, err
	}
	srv.OpAMP, srv.Revocations = op, revocations
	return srv, nil
}

// listenerCert is the listeners' certificate, reissued when the
// intermediate rolls over so new handshakes present the new chain at once.
type listenerCert struct {
	ca    *ca.Authority
	names []string
	cur   atomic.Pointer[tls.Certificate]
}

func (l *listenerCert) renew(ctx context.Context) error {
	cert, err := l.ca.ServerCertificate(ctx, l.names)
	if err != nil {
		return err
	}
	l.cur.Store(&cert)
	return nil
}

func (l *listenerCert) get(*tls.ClientHelloInfo) (*tls.Certificate, error) { return l.cur.Load(), nil }

// RotateIntermediate rolls the CA's intermediate over and reissues the
// listeners' certificate under it.
func (l *listenerCert) RotateIntermediate(ctx context.Context) (old, next *x509.Certificate, err error) {
	if old, next, err = l.ca.RotateIntermediate(ctx); err != nil {
		return nil, nil, err
	}
	if err := l.renew(ctx); err != nil {
		return old, next, fmt.Errorf("rolled over, but reissuing the listener certificate failed (the previous one stays in use): %w", err)
	}
	return old, next, nil
}

// RotateRoot rolls the root over and reissues the listeners' certificate.
func (l *listenerCert) RotateRoot(ctx context.Context) (old, next *x509.Certificate, err error) {
	if old, next, err = l.ca.RotateRoot(ctx); err != nil {
		return nil, nil, err
	}
	if err := l.renew(ctx); err != nil {
		return old, next, fmt.Errorf("rolled over, but reissuing the listener certificate failed (the previous one stays in use): %w", err)
	}
	return old, next, nil
}

// FinishRootRollover ends the overlap and reissues the listeners'
// certificate without the bridge.
func (l *listenerCert) FinishRootRollover(ctx context.Context) error {
	if err := l.ca.FinishRootRollover(ctx); err != nil {
		return err
	}
	return l.renew(ctx)
}

// openPolicies loads the policy directory (created if missing, so it can
// be watched) and audits every set that goes live.
func openPolicies(ctx context.Context, d *datadir.Dir, auditLog *audit.Log, op *opamp.Server, releases *release.Service, log *slog.Logger) (*policies.Source, error) {
	dir := d.Config.Policies.Dir
	if dir == "" {
		dir = "policies"
	}
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(d.Layout.Root, dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("policies directory: %w", err)
	}
	src, err := policies.NewSource(ctx, policies.SourceConfig{Dir: dir, Check: op.CheckPolicies, Logger: log,
		Limits: policyLimits(d.Config.Policies),
		Accept: func(ctx context.Context, actor string, old, next *policies.Set) error {
			return d.Store.Update(ctx, func(tx *state.Tx) error {
				_, err := auditLog.Append(ctx, tx, audit.Record{Actor: actor, Action: "policy.load", Subject: dir,
					Details: map[string]any{"files": fileHashes(next.Files), "previous": fileHashes(old.Files), "rules": next.Len()}})
				return err
			})
		},
		Changed: func(*policies.Set) { releases.PoliciesChanged() },
	}, "system:startup")
	if err != nil {
		return nil, fmt.Errorf("policies in %s: %w", dir, err)
	}
	return src, nil
}

// policyLimits are the configured bounds on policy conditions.
func policyLimits(c config.Policies) policies.Limits {
	return policies.Limits{CostLimit: c.CostLimit, MaxExpressionSize: c.MaxExpressionSize, MaxExpressionNesting: c.MaxExpressionNesting}
}

func fileHashes(files []policies.File) map[string]string {
	out := make(map[string]string, len(files))
	for _, f := range files {
		out[f.Name] = f.SHA256
	}
	return out
}

// openVault connects to Vault when the configuration uses it (key custody
// or an issuer): one client, also checked by /healthz. Nil when unused.
func openVault(d *datadir.Dir) (*vaultclient.Client, error) {
	used := d.Config.Keys.Custody == "vault-kv"
	for _, p := range d.Config.Certificates.Profiles {
		used = used || p.Issuer == "vault-pki"
	}
	if !used {
		return nil, nil
	}
	vc, err := datadir.VaultConfig(d.Config.Vault)
	if err != nil {
		return nil, err
	}
	return vaultclient.New(vc)
}

// openIssuers builds the external issuers the profiles name.
func openIssuers(d *datadir.Dir, vc *vaultclient.Client) (map[string]ca.Issuer, error) {
	out := map[string]ca.Issuer{}
	for _, p := range d.Config.Certificates.Profiles {
		if p.Issuer == "step-ca" && out["step-ca"] == nil {
			sc := d.Config.Issuers.StepCA
			if sc.Password == "" {
				return nil, fmt.Errorf("issuers.step_ca: set %s (the JWK provisioner's password)", config.EnvStepCAPassword)
			}
			rootFile := config.ResolvePath(d.Layout.Root, sc.RootFile)
			rootPEM, err := os.ReadFile(rootFile)
			if err != nil {
				return nil, fmt.Errorf("issuers.step_ca.root_file: %w", err)
			}
			is, err := ca.NewStepCA(ca.StepCAConfig{URL: sc.URL, RootFile: rootFile, Provisioner: sc.Provisioner,
				Password: []byte(sc.Password), Timeout: sc.Timeout}, rootPEM)
			if err != nil {
				return nil, err
			}
			out["step-ca"] = is
		}
		if p.Issuer != "vault-pki" || out["vault-pki"] != nil {
			continue
		}
		vp := d.Config.Issuers.VaultPKI
		pemBytes, err := os.ReadFile(config.ResolvePath(d.Layout.Root, vp.CAFile))
		if err != nil {
			return nil, fmt.Errorf("issuers.vault_pki.ca_file: %w", err)
		}
		roots, err := ca.ParseCertificates(pemBytes)
		if err != nil {
			return nil, fmt.Errorf("issuers.vault_pki.ca_file: %w", err)
		}
		is, err := ca.NewVaultPKI(ca.VaultPKIConfig{Client: vc, Mount: vp.Mount, Role: vp.Role, Roots: roots})
		if err != nil {
			return nil, err
		}
		out["vault-pki"] = is
	}
	return out, nil
}

// dependencies are what /healthz checks besides the store.
func dependencies(vc *vaultclient.Client) map[string]func(context.Context) error {
	if vc == nil {
		return nil
	}
	return map[string]func(context.Context) error{"vault": vc.Health}
}

// Profiles maps the config's certificate profiles onto the CA's.
func Profiles(in map[string]config.CertProfile) map[string]ca.Profile {
	out := make(map[string]ca.Profile, len(in))
	for name, p := range in {
		out[name] = ca.Profile{
			Name: name, Lifetime: p.Lifetime, RenewAt: p.RenewAt, Jitter: p.Jitter, Backdate: p.Backdate,
			KeyTypes: p.KeyTypes, RSAMinBits: p.RSAMinBits, ServerMadeKeys: p.ServerMadeKeys, SANTemplates: p.SANTemplates,
			Issuer: p.Issuer,
		}
	}
	return out
}

// opampLimits carries the configured message limits to the OpAMP server;
// zero fields take opamp.Limits' defaults.
func opampLimits(l config.OpAMPLimits) opamp.Limits {
	return opamp.Limits{MessageSize: l.MessageSize, NestingDepth: l.NestingDepth,
		DescriptionAttributes: l.DescriptionAttributes, DescriptionSize: l.DescriptionSize, HealthSize: l.HealthSize,
		EffectiveConfigSize: l.EffectiveConfigSize, PackageStatuses: l.PackageStatuses, PackageStatusSize: l.PackageStatusSize}
}

func destinations(in map[string]config.Destination) map[string]opamp.Destination {
	out := make(map[string]opamp.Destination, len(in))
	for name, d := range in {
		out[name] = opamp.Destination{Endpoint: d.Endpoint, Headers: d.Headers, Profile: d.Profile}
	}
	return out
}

// openBlobs opens the configured release artifact store.
func openBlobs(ctx context.Context, d *datadir.Dir) (blob.Store, error) {
	c := d.Config.Blobs
	if c.Driver == "s3" {
		return blob.NewS3(ctx, blob.S3Config{Endpoint: c.S3.Endpoint, Bucket: c.S3.Bucket, Region: c.S3.Region,
			AccessKey: c.S3.AccessKey, SecretKey: c.S3.SecretKey, Insecure: c.S3.Insecure, Retention: c.S3.Retention})
	}
	dir := c.Dir
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(d.Layout.Root, dir)
	}
	return blob.NewFS(dir)
}

// revocationURLs are the CRL and OCSP addresses written into agent
// certificates: the configured ones, else the OpAMP listener's public
// endpoints under its first server name.
func revocationURLs(c config.Config) (crlURL, ocspURL string) {
	crlURL, ocspURL = c.CRL.URL, c.OCSP.URL
	if crlURL != "" && ocspURL != "" {
		return crlURL, ocspURL
	}
	_, port, err := net.SplitHostPort(c.OpAMP.Addr)
	if err != nil || port == "" || len(c.OpAMP.ServerNames) == 0 {
		return crlURL, ocspURL
	}
	base := "https://" + net.JoinHostPort(c.OpAMP.ServerNames[0], port)
	if crlURL == "" {
		crlURL = base + "/v1/crl"
	}
	if ocspURL == "" {
		ocspURL = base + "/v1/ocsp"
	}
	return crlURL, ocspURL
}

// dialable turns a listen address into one a local client can dial.
func dialable(a net.Addr) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}
