// Package config holds trustamp's configuration: one YAML file whose every key
// has a safe default, so an empty file (or none at all) yields a working,
// strict server. Unknown keys are refused rather than ignored, because a typo
// in a security setting that silently falls back to a default is worse than a
// server that will not start.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// FileName is the config file's name inside a data dir; `--config` overrides it.
const FileName = "trustamp.yaml"

// Config is the whole configuration. The zero value of every field means "use
// the default" (see Default), so partial files work.
type Config struct {
	// TrustDomain names the SPIFFE trust domain agent identities live in.
	// Empty means "trustamp.local".
	TrustDomain  string       `yaml:"trust_domain"`
	OpAMP        OpAMP        `yaml:"opamp"`
	Admin        Admin        `yaml:"admin"`
	State        State        `yaml:"state"`
	Audit        Audit        `yaml:"audit"`
	Certificates Certificates `yaml:"certificates"`
	Blobs        Blobs        `yaml:"blobs"`
	Packages     Packages     `yaml:"packages"`
	Policies     Policies     `yaml:"policies"`
	Keys         Keys         `yaml:"keys"`
	Vault        Vault        `yaml:"vault"`
	Issuers      Issuers      `yaml:"issuers"`
	CRL          CRL          `yaml:"crl"`
	OCSP         OCSP         `yaml:"ocsp"`
	// Destinations are connections other than OpAMP (the agent's own
	// telemetry, exporters) for which agents get a client certificate of
	// their own, by name: own_metrics, own_traces, own_logs, or any other
	// name for other_connections. Empty means none.
	Destinations map[string]Destination `yaml:"destinations"`
	Log          Log                    `yaml:"log"`
}

// Destination is one non-OpAMP connection an agent gets credentials for.
type Destination struct {
	// Endpoint is sent to the agent as the destination's URL. Required.
	Endpoint string `yaml:"endpoint"`
	// Headers are sent with the offer (for example a tenant header).
	Headers map[string]string `yaml:"headers"`
	// Profile names the certificate profile. Empty means certificates.profile.
	Profile string `yaml:"profile"`
}

// Certificates configures agent certificates: profiles and rotation.
type Certificates struct {
	// Profile names the profile for agents' OpAMP connection certificates.
	// Empty means "default".
	Profile string `yaml:"profile"`
	// Profiles are the certificate profiles by name. A "default" profile
	// always exists; fields left out take the defaults below.
	Profiles map[string]CertProfile `yaml:"profiles"`
	// RotationRate bounds server-initiated rotations, fleet-wide, per
	// second, so a mass rotation never stampedes. Zero means 50.
	RotationRate float64 `yaml:"rotation_rate"`
	// ScanInterval is how often the scheduler looks for certificates past
	// their renew point and for rotations to retry. Zero means 10s.
	ScanInterval time.Duration `yaml:"scan_interval"`
	// OfferTimeout is how long an offered certificate (or a CSR request)
	// may stay unconfirmed before the rotation is marked stalled and
	// retried with backoff. Zero means 2m.
	OfferTimeout time.Duration `yaml:"offer_timeout"`
	// AgentCSRInterval is the minimum average interval between CSRs one
	// agent may send on its own (burst of 3). Zero means 10s.
	AgentCSRInterval time.Duration `yaml:"agent_csr_interval"`
	// IntermediateKey, when set to a KMS URI (hashivault://KEY), is where
	// the keys of intermediates made from now on live (Vault Transit,
	// configured by VAULT_ADDR and VAULT_TOKEN): `trustamp ca
	// rotate-intermediate` then certifies that key, and issuance, CRLs and
	// OCSP never see a private key. Empty means the key store.
	IntermediateKey string `yaml:"intermediate_key"`
}

// withDefaults fills the fields left out of a profile.
func (p CertProfile) withDefaults() CertProfile {
	if p.Lifetime == 0 {
		p.Lifetime = 24 * time.Hour
	}
	if p.RenewAt == 0 {
		p.RenewAt = 0.6667
	}
	if p.Jitter == 0 {
		p.Jitter = 0.05
	}
	if p.Backdate == 0 {
		p.Backdate = time.Minute
	}
	if len(p.KeyTypes) == 0 {
		p.KeyTypes = []string{"ecdsa-p256", "ecdsa-p384", "ed25519", "rsa"}
	}
	if p.RSAMinBits == 0 {
		p.RSAMinBits = 2048
	}
	if p.Issuer == "" {
		p.Issuer = "embedded"
	}
	return p
}

// CertProfile is one certificate profile; see ca.Profile.
type CertProfile struct {
	// Lifetime of certificates. Zero means 24h.
	Lifetime time.Duration `yaml:"lifetime"`
	// RenewAt is the fraction of the lifetime after which a certificate is
	// rotated. Zero means 0.6667.
	RenewAt float64 `yaml:"renew_at"`
	// Jitter is the largest fraction of the lifetime a renew point moves
	// earlier, per certificate. Zero means 0.05.
	Jitter float64 `yaml:"jitter"`
	// Backdate moves NotBefore into the past for clock skew. Zero means 1m.
	Backdate time.Duration `yaml:"backdate"`
	// KeyTypes allowed in CSRs. Empty means ecdsa-p256, ecdsa-p384, ed25519, rsa.
	KeyTypes []string `yaml:"key_types"`
	// RSAMinBits is the smallest RSA key accepted. Zero means 2048.
	RSAMinBits int `yaml:"rsa_min_bits"`
	// ServerMadeKeys lets the server generate the key pair for agents that
	// cannot send a CSR. False by default.
	ServerMadeKeys bool `yaml:"server_made_keys"`
	// SANTemplates add DNS SANs from agent attributes, e.g.
	// "{host.name}.agents.example.com"; each placeholder must expand to one
	// DNS label. Empty (default) means no extra SANs.
	SANTemplates []string `yaml:"san_templates"`
	// Issuer signs the profile's certificates: "embedded" (the default,
	// trustamp's own CA), "vault-pki" (issuers.vault_pki) or "step-ca"
	// (issuers.step_ca). trustamp keeps
	// deciding subject, SANs, usages and lifetime either way.
	Issuer string `yaml:"issuer"`
}

// OpAMP configures the agent-facing listener.
type OpAMP struct {
	// Addr is the listen address of the OpAMP listener. Empty means ":4320",
	// the port the OpAMP specification recommends.
	Addr string `yaml:"addr"`
	// ServerNames are the DNS names and IP addresses in the listener's
	// certificate. Empty means localhost, 127.0.0.1 and the hostname.
	ServerNames []string `yaml:"server_names"`
	// HeartbeatInterval is sent to agents in every connection settings
	// offer. Zero means 30s.
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
	// MaxConcurrentEnrollments bounds enrollments in progress (a slot is
	// held while a CSR is handled, not by an idle connection); beyond it
	// agents are told to retry later. Zero means 256.
	MaxConcurrentEnrollments int `yaml:"max_concurrent_enrollments"`
	// ReplicaID names this server in the fleet registry. Empty means the
	// hostname.
	ReplicaID string `yaml:"replica_id"`
	// EnrollTimeout is how long a token-authenticated (enrolling) WebSocket
	// may stay open before it is closed and logged: an agent sends its CSR
	// at once. Zero means 10s.
	EnrollTimeout time.Duration `yaml:"enroll_timeout"`
	// ReadTimeout bounds reading one plain-HTTP OpAMP request body. Zero
	// means 10s.
	ReadTimeout time.Duration `yaml:"read_timeout"`
	// Limits bound what one agent message may be and carry.
	Limits OpAMPLimits `yaml:"limits"`
}

// OpAMPLimits bound each AgentToServer message. Zero fields mean the
// defaults documented on opamp.Limits (in brackets here); an over-limit
// message is refused with a BadRequest naming the key.
type OpAMPLimits struct {
	// MessageSize is the largest message in bytes, after decompression, on
	// both transports [4 MiB]; at most 64 MiB, the spec's recommendation.
	MessageSize int64 `yaml:"message_size"`
	// NestingDepth bounds nested attribute values and health maps [16]; at
	// most 32.
	NestingDepth int `yaml:"nesting_depth"`
	// DescriptionAttributes bounds the description's attributes at every
	// level [512].
	DescriptionAttributes int `yaml:"description_attributes"`
	// DescriptionSize bounds the description in bytes [64 KiB]; at most 512 KiB.
	DescriptionSize int `yaml:"description_size"`
	// HealthSize bounds the health report in bytes [256 KiB]; at most 512 KiB.
	HealthSize int `yaml:"health_size"`
	// EffectiveConfigSize bounds the effective config in bytes [1 MiB].
	EffectiveConfigSize int `yaml:"effective_config_size"`
	// PackageStatuses bounds the package statuses in a message [256].
	PackageStatuses int `yaml:"package_statuses"`
	// PackageStatusSize bounds one package status in bytes [4 KiB].
	PackageStatusSize int `yaml:"package_status_size"`
}

// defaultOpAMPLimits are opamp.Limits' defaults, spelled out for the
// effective config.
func defaultOpAMPLimits() OpAMPLimits {
	return OpAMPLimits{MessageSize: 4 << 20, NestingDepth: 16, DescriptionAttributes: 512, DescriptionSize: 64 << 10,
		HealthSize: 256 << 10, EffectiveConfigSize: 1 << 20, PackageStatuses: 256, PackageStatusSize: 4 << 10}
}

// fill sets zero fields from d.
func (l *OpAMPLimits) fill(d OpAMPLimits) {
	if l.MessageSize == 0 {
		l.MessageSize = d.MessageSize
	}
	for _, f := range []struct {
		v *int
		d int
	}{{&l.NestingDepth, d.NestingDepth}, {&l.DescriptionAttributes, d.DescriptionAttributes},
		{&l.DescriptionSize, d.DescriptionSize}, {&l.HealthSize, d.HealthSize}, {&l.EffectiveConfigSize, d.EffectiveConfigSize},
		{&l.PackageStatuses, d.PackageStatuses}, {&l.PackageStatusSize, d.PackageStatusSize}} {
		if *f.v == 0 {
			*f.v = f.d
		}
	}
}

// validate checks the limits' ranges. The upper bounds keep every stored
// agent row under the state store's backstop (4 MiB and 128 levels of JSON
// per field), whatever the agent sent.
func (l OpAMPLimits) validate() error {
	for key, v := range map[string]int64{"message_size": l.MessageSize, "nesting_depth": int64(l.NestingDepth),
		"description_attributes": int64(l.DescriptionAttributes), "description_size": int64(l.DescriptionSize),
		"health_size": int64(l.HealthSize), "effective_config_size": int64(l.EffectiveConfigSize),
		"package_statuses": int64(l.PackageStatuses), "package_status_size": int64(l.PackageStatusSize)} {
		if v < 0 {
			return fmt.Errorf("opamp.limits.%s: must not be negative", key)
		}
	}
	switch {
	case l.MessageSize > 64<<20:
		return fmt.Errorf("opamp.limits.message_size: %d is over the 64 MiB the OpAMP specification recommends", l.MessageSize)
	case l.NestingDepth > 32:
		return fmt.Errorf("opamp.limits.nesting_depth: %d is over the maximum 32", l.NestingDepth)
	case l.DescriptionSize > 512<<10:
		return fmt.Errorf("opamp.limits.description_size: %d is over the maximum 512 KiB", l.DescriptionSize)
	case l.HealthSize > 512<<10:
		return fmt.Errorf("opamp.limits.health_size: %d is over the maximum 512 KiB", l.HealthSize)
	}
	return nil
}

// Admin configures the operator-facing listener.
type Admin struct {
	// Addr is the admin API's listen address. Empty means "127.0.0.1:4321":
	// loopback, so the admin API is never exposed by accident.
	Addr string `yaml:"addr"`
	// MaxBodyBytes bounds a JSON request body on the admin API; a larger
	// one is refused with 413 unread. Zero means 1 MiB.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// MaxUploadBytes bounds a package artifact uploaded through the admin
	// API (POST /api/v1/packages). Zero means 1 GiB.
	MaxUploadBytes int64 `yaml:"max_upload_bytes"`
}

// State selects and configures the state store.
type State struct {
	// Driver is "sqlite" (default, one replica) or "postgres" (several replicas).
	Driver   string   `yaml:"driver"`
	SQLite   SQLite   `yaml:"sqlite"`
	Postgres Postgres `yaml:"postgres"`
}

// SQLite configures the embedded database.
type SQLite struct {
	// Path of the database file; relative paths are inside the data dir.
	// Empty means "state.db".
	Path string `yaml:"path"`
	// BusyTimeout bounds how long a query waits for a lock. Zero means 5s.
	BusyTimeout time.Duration `yaml:"busy_timeout"`
}

// Postgres configures the shared database used by several replicas.
type Postgres struct {
	// DSN is a libpq-style URL or key=value string. It carries a password, so
	// prefer the environment variable TRUSTAMP_POSTGRES_DSN, which overrides it.
	DSN string `yaml:"dsn"`
	// MaxConns caps the connection pool. Zero means 10.
	MaxConns int `yaml:"max_conns"`
}

// Audit configures the tamper-evident audit log.
type Audit struct {
	// CheckpointInterval is how often the head of the hash chain is signed
	// with the audit key, when new entries exist. Zero means 1m. The interval
	// bounds how many trailing entries an attacker with database access could
	// drop without a signed checkpoint noticing.
	CheckpointInterval time.Duration `yaml:"checkpoint_interval"`
}

// Blobs configures where release artifacts are stored.
type Blobs struct {
	// Driver is fs (the data dir) or s3 (MinIO, AWS S3, any S3-compatible
	// store). Empty means fs.
	Driver string `yaml:"driver"`
	// Dir is the fs store's directory, relative to the data dir. Empty
	// means "blobs".
	Dir string  `yaml:"dir"`
	S3  BlobsS3 `yaml:"s3"`
}

// BlobsS3 locates the S3 bucket.
type BlobsS3 struct {
	Endpoint string `yaml:"endpoint"` // host[:port]
	Bucket   string `yaml:"bucket"`
	Region   string `yaml:"region"`
	// AccessKey; the secret key comes only from the environment
	// (TRUSTAMP_S3_SECRET_KEY), never from this file. Both empty: the AWS_*
	// or MINIO_* environment.
	AccessKey string `yaml:"access_key"`
	SecretKey string `yaml:"-"`
	// Insecure talks plain HTTP (a loopback MinIO only).
	Insecure bool `yaml:"insecure"`
	// Retention puts each published blob under S3 object lock (governance
	// mode) for this long. Empty means none. Needs a bucket created with
	// object lock (a missing bucket is created so).
	Retention time.Duration `yaml:"retention"`
}

// Keys chooses the custodian of the server's private keys (CA keys, the
// audit key, the OCSP signer).
type Keys struct {
	// Custody is "age" (the default: files in DATA/keys encrypted to the
	// data dir's age identity) or "vault-kv" (Vault's KV v2 over the vault
	// connection; the data dir then holds no private key).
	Custody string  `yaml:"custody"`
	VaultKV VaultKV `yaml:"vault_kv"`
}

// VaultKV is where keys live in Vault KV v2.
type VaultKV struct {
	// Mount is the KV v2 mount. Empty means "secret".
	Mount string `yaml:"mount"`
	// Path is the prefix under the mount. Empty means "trustamp/keys".
	Path string `yaml:"path"`
}

// Vault is the connection to Vault shared by key custody (vault-kv) and the
// vault-pki issuer. The token (TRUSTAMP_VAULT_TOKEN) and the AppRole secret
// ID (TRUSTAMP_VAULT_SECRET_ID) come from the environment only, never from
// this file.
type Vault struct {
	// Address is Vault's URL.
	Address string `yaml:"address"`
	// Auth is "token" or "approle". Empty means "token".
	Auth string `yaml:"auth"`
	// RoleID is the AppRole role ID (auth: approle); AppRoleMount where
	// AppRole is mounted (default "approle").
	RoleID       string `yaml:"role_id"`
	AppRoleMount string `yaml:"approle_mount"`
	// CAFile verifies Vault's TLS certificate; empty means the system roots.
	CAFile string `yaml:"ca_file"`
	// Namespace is the Vault Enterprise namespace, if any.
	Namespace string `yaml:"namespace"`
	// Timeout bounds each request to Vault. Zero means 10s.
	Timeout time.Duration `yaml:"timeout"`
	// Token and SecretID are read from the environment.
	Token    string `yaml:"-"`
	SecretID string `yaml:"-"`
}

// Issuers configures the external certificate issuers a profile can name
// (certificates.profiles.NAME.issuer).
type Issuers struct {
	VaultPKI VaultPKI `yaml:"vault_pki"`
	StepCA   StepCA   `yaml:"step_ca"`
}

// StepCA signs agent CSRs with a remote step-ca through a JWK provisioner.
// The provisioner's password comes from TRUSTAMP_STEPCA_PASSWORD only.
type StepCA struct {
	// URL is the step-ca's https address.
	URL string `yaml:"url"`
	// RootFile is step-ca's root certificate: it verifies the connection
	// and is the trust anchor for agents it signs. Relative to the data dir.
	RootFile string `yaml:"root_file"`
	// Provisioner is the JWK provisioner's name.
	Provisioner string `yaml:"provisioner"`
	// Timeout bounds each request. Zero means 10s.
	Timeout time.Duration `yaml:"timeout"`
	// Password is read from the environment.
	Password string `yaml:"-"`
}

// VaultPKI signs agent CSRs with Vault's PKI secrets engine over the vault
// connection.
type VaultPKI struct {
	// Mount is the PKI mount. Empty means "pki".
	Mount string `yaml:"mount"`
	// Role is the PKI role CSRs are signed under (pki/sign/<role>).
	Role string `yaml:"role"`
	// CAFile is the PEM of the CA the role's certificates chain to: the
	// trust anchor for agents it signs, pinned here rather than fetched from
	// the Vault it vouches for. Relative to the data dir.
	CAFile string `yaml:"ca_file"`
}

// Policies locates the CEL policy files.
type Policies struct {
	// Dir holds the policy files (*.yaml, *.yml), reloaded when they
	// change. Empty means <data dir>/policies; a relative path is relative
	// to the data dir.
	Dir string `yaml:"dir"`
	// CostLimit bounds one evaluation of one CEL condition, in CEL cost
	// units (about one per value visited or byte copied): a rule whose
	// estimated worst case is higher is refused when the files load, and
	// an evaluation that reaches it at run time stops (no match). Zero
	// means 100000.
	CostLimit uint64 `yaml:"cost_limit"`
	// MaxExpressionSize bounds a CEL condition's length in characters.
	// Zero means 4096.
	MaxExpressionSize int `yaml:"max_expression_size"`
	// MaxExpressionNesting bounds how deeply a CEL condition nests
	// (parentheses, calls, comprehensions). Zero means 32.
	MaxExpressionNesting int `yaml:"max_expression_nesting"`
	// SimulateCostLimit bounds all the CEL evaluations of one `policy
	// simulate` request together (every agent, current and candidate
	// rules); a simulation that reaches it is refused with 422. Zero means
	// 10000000.
	SimulateCostLimit uint64 `yaml:"simulate_cost_limit"`
}

// Packages configures how releases are offered to agents.
type Packages struct {
	// DownloadBaseURL is the https://host:port agents download
	// /v1/packages/<sha256> from. Empty means the address each agent used to
	// reach the OpAMP endpoint (right behind a TCP load balancer too).
	DownloadBaseURL string `yaml:"download_base_url"`
	// Presign offers presigned object-storage URLs instead of the server's
	// own endpoint when blobs.driver is s3. Default true.
	Presign *bool `yaml:"presign"`
	// PresignExpiry bounds a presigned URL's life. Empty means 1h.
	PresignExpiry time.Duration `yaml:"presign_expiry"`
	// RecheckInterval is how long a blob's hash check stays valid before
	// it is offered or served again. Empty means 1h.
	RecheckInterval time.Duration `yaml:"recheck_interval"`
	// HaltFailureRate halts a rollout (no new offers of the release) when
	// this share of the agents offered it reported a failed install...
	// Empty means 0.2.
	HaltFailureRate float64 `yaml:"halt_failure_rate"`
	// ...and at least this many did. Empty means 3.
	HaltMinFailures int `yaml:"halt_min_failures"`
}

// CRL configures the certificate revocation list served at /v1/crl.
type CRL struct {
	// NextUpdate is each CRL's validity window; a fresh one is made on every
	// revocation and at least every half of it. Zero means 1h.
	NextUpdate time.Duration `yaml:"next_update"`
	// URL is the distribution point written into agent certificates. Empty
	// means https://<first opamp.server_names>:<opamp port>/v1/crl.
	URL string `yaml:"url"`
}

// OCSP configures the OCSP responder at /v1/ocsp.
type OCSP struct {
	// Validity is each response's nextUpdate - thisUpdate: how long relying
	// parties may cache it. Zero means 1h.
	Validity time.Duration `yaml:"validity"`
	// URL is the responder address written into agent certificates. Empty
	// means https://<first opamp.server_names>:<opamp port>/v1/ocsp.
	URL string `yaml:"url"`
}

// Log configures the server's structured logs.
type Log struct {
	// Level is debug, info, warn or error. Empty means info.
	Level string `yaml:"level"`
	// Format is text or json. Empty means text.
	Format string `yaml:"format"`
}

// Default returns the configuration an empty file produces.
func Default() Config {
	yes := true
	return Config{
		TrustDomain: "trustamp.local",
		OpAMP: OpAMP{Addr: ":4320", ServerNames: defaultServerNames(),
			HeartbeatInterval: 30 * time.Second, MaxConcurrentEnrollments: 256, ReplicaID: hostname(),
			EnrollTimeout: 10 * time.Second, ReadTimeout: 10 * time.Second, Limits: defaultOpAMPLimits()},
		Admin: Admin{Addr: "127.0.0.1:4321"},
		State: State{
			Driver:   "sqlite",
			SQLite:   SQLite{Path: "state.db", BusyTimeout: 5 * time.Second},
			Postgres: Postgres{MaxConns: 10},
		},
		Audit: Audit{CheckpointInterval: time.Minute},
		Certificates: Certificates{
			Profile: "default", Profiles: map[string]CertProfile{"default": CertProfile{}.withDefaults()},
			RotationRate: 50, ScanInterval: 10 * time.Second, OfferTimeout: 2 * time.Minute, AgentCSRInterval: 10 * time.Second,
		},
		Blobs: Blobs{Driver: "fs", Dir: "blobs"},
		Keys:  Keys{Custody: "age"},
		Packages: Packages{Presign: &yes, PresignExpiry: time.Hour, RecheckInterval: time.Hour,
			HaltFailureRate: 0.2, HaltMinFailures: 3},
		CRL:  CRL{NextUpdate: time.Hour},
		OCSP: OCSP{Validity: time.Hour},
		Log:  Log{Level: "info", Format: "text"},
	}
}

// Load reads the file at path, applies defaults and environment overrides,
// and validates the result. A missing file is not an error: defaults apply.
// getenv is injected so tests do not depend on the process environment.
func Load(path string, getenv func(string) string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return Config{}, fmt.Errorf("config: read %s: %w", path, err)
	}
	cfg, err := Parse(data, getenv)
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// Parse decodes YAML bytes, applies defaults and environment overrides, and
// validates the result.
func Parse(data []byte, getenv func(string) string) (Config, error) {
	var cfg Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, fmt.Errorf("%w (every key is documented in README.md)", err)
	}
	cfg.applyDefaults()
	cfg.applyEnv(getenv)
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

func (c *Config) applyDefaults() {
	d := Default()
	setString(&c.TrustDomain, d.TrustDomain)
	setString(&c.OpAMP.Addr, d.OpAMP.Addr)
	if len(c.OpAMP.ServerNames) == 0 {
		c.OpAMP.ServerNames = d.OpAMP.ServerNames
	}
	if c.OpAMP.HeartbeatInterval == 0 {
		c.OpAMP.HeartbeatInterval = d.OpAMP.HeartbeatInterval
	}
	if c.OpAMP.MaxConcurrentEnrollments == 0 {
		c.OpAMP.MaxConcurrentEnrollments = d.OpAMP.MaxConcurrentEnrollments
	}
	setString(&c.OpAMP.ReplicaID, d.OpAMP.ReplicaID)
	if c.OpAMP.EnrollTimeout == 0 {
		c.OpAMP.EnrollTimeout = d.OpAMP.EnrollTimeout
	}
	if c.OpAMP.ReadTimeout == 0 {
		c.OpAMP.ReadTimeout = d.OpAMP.ReadTimeout
	}
	c.OpAMP.Limits.fill(d.OpAMP.Limits)
	setString(&c.Admin.Addr, d.Admin.Addr)
	setString(&c.State.Driver, d.State.Driver)
	setString(&c.State.SQLite.Path, d.State.SQLite.Path)
	if c.State.SQLite.BusyTimeout == 0 {
		c.State.SQLite.BusyTimeout = d.State.SQLite.BusyTimeout
	}
	if c.State.Postgres.MaxConns == 0 {
		c.State.Postgres.MaxConns = d.State.Postgres.MaxConns
	}
	if c.Audit.CheckpointInterval == 0 {
		c.Audit.CheckpointInterval = d.Audit.CheckpointInterval
	}
	cd := d.Certificates
	setString(&c.Certificates.Profile, cd.Profile)
	if c.Certificates.Profiles == nil {
		c.Certificates.Profiles = map[string]CertProfile{}
	}
	if _, ok := c.Certificates.Profiles["default"]; !ok {
		c.Certificates.Profiles["default"] = CertProfile{}
	}
	for name, p := range c.Certificates.Profiles {
		c.Certificates.Profiles[name] = p.withDefaults()
	}
	if c.Certificates.RotationRate == 0 {
		c.Certificates.RotationRate = cd.RotationRate
	}
	if c.Certificates.ScanInterval == 0 {
		c.Certificates.ScanInterval = cd.ScanInterval
	}
	if c.Certificates.OfferTimeout == 0 {
		c.Certificates.OfferTimeout = cd.OfferTimeout
	}
	if c.Certificates.AgentCSRInterval == 0 {
		c.Certificates.AgentCSRInterval = cd.AgentCSRInterval
	}
	setString(&c.Keys.Custody, d.Keys.Custody)
	setString(&c.Blobs.Driver, d.Blobs.Driver)
	setString(&c.Blobs.Dir, d.Blobs.Dir)
	if c.Packages.Presign == nil {
		c.Packages.Presign = d.Packages.Presign
	}
	if c.Packages.PresignExpiry == 0 {
		c.Packages.PresignExpiry = d.Packages.PresignExpiry
	}
	if c.Packages.RecheckInterval == 0 {
		c.Packages.RecheckInterval = d.Packages.RecheckInterval
	}
	if c.Packages.HaltFailureRate == 0 {
		c.Packages.HaltFailureRate = d.Packages.HaltFailureRate
	}
	if c.Packages.HaltMinFailures == 0 {
		c.Packages.HaltMinFailures = d.Packages.HaltMinFailures
	}
	if c.CRL.NextUpdate == 0 {
		c.CRL.NextUpdate = d.CRL.NextUpdate
	}
	if c.OCSP.Validity == 0 {
		c.OCSP.Validity = d.OCSP.Validity
	}
	setString(&c.Log.Level, d.Log.Level)
	setString(&c.Log.Format, d.Log.Format)
}

// EnvPostgresDSN overrides state.postgres.dsn, so the password need not be
// written into the config file.
const EnvPostgresDSN = "TRUSTAMP_POSTGRES_DSN"

// EnvVaultToken and EnvVaultSecretID carry the Vault credentials of
// the vault section.
const (
	EnvVaultToken    = "TRUSTAMP_VAULT_TOKEN"
	EnvVaultSecretID = "TRUSTAMP_VAULT_SECRET_ID"
	// EnvStepCAPassword decrypts the step-ca JWK provisioner's key.
	EnvStepCAPassword = "TRUSTAMP_STEPCA_PASSWORD"
)

// EnvS3AccessKey and EnvS3SecretKey carry the S3 credentials.
const (
	EnvS3AccessKey = "TRUSTAMP_S3_ACCESS_KEY"
	EnvS3SecretKey = "TRUSTAMP_S3_SECRET_KEY"
)

func (c *Config) applyEnv(getenv func(string) string) {
	if getenv == nil {
		return
	}
	if v := getenv(EnvPostgresDSN); v != "" {
		c.State.Postgres.DSN = v
	}
	if v := getenv(EnvS3AccessKey); v != "" {
		c.Blobs.S3.AccessKey = v
	}
	c.Blobs.S3.SecretKey = getenv(EnvS3SecretKey)
	c.Vault.Token = getenv(EnvVaultToken)
	c.Vault.SecretID = getenv(EnvVaultSecretID)
	c.Issuers.StepCA.Password = getenv(EnvStepCAPassword)
}

// validateKeys checks keys.*, vault.* and issuers.* (secrets are checked
// where they are used: `keys migrate` needs them only for the target).
func (c *Config) validateKeys() error {
	switch c.Keys.Custody {
	case "age", "vault-kv":
	default:
		return fmt.Errorf("keys.custody: %q is not one of age, vault-kv", c.Keys.Custody)
	}
	v := c.Vault
	if c.Keys.Custody == "vault-kv" && v.Address == "" {
		return errors.New("vault.address: required when keys.custody is vault-kv")
	}
	switch v.Auth {
	case "", "token":
	case "approle":
		if v.RoleID == "" {
			return errors.New("vault.role_id: required when vault.auth is approle")
		}
	default:
		return fmt.Errorf("vault.auth: %q is not one of token, approle", v.Auth)
	}
	if v.Timeout < 0 {
		return errors.New("vault.timeout: must not be negative")
	}
	for name, p := range c.Certificates.Profiles {
		switch p.Issuer {
		case "", "embedded":
		case "vault-pki":
			if v.Address == "" || c.Issuers.VaultPKI.Role == "" || c.Issuers.VaultPKI.CAFile == "" {
				return fmt.Errorf("certificates.profiles.%s.issuer: vault-pki needs vault.address, issuers.vault_pki.role and issuers.vault_pki.ca_file", name)
			}
		case "step-ca":
			sc := c.Issuers.StepCA
			if sc.URL == "" || sc.RootFile == "" || sc.Provisioner == "" {
				return fmt.Errorf("certificates.profiles.%s.issuer: step-ca needs issuers.step_ca.url, root_file and provisioner", name)
			}
		default:
			return fmt.Errorf("certificates.profiles.%s.issuer: %q is not one of embedded, vault-pki, step-ca", name, p.Issuer)
		}
	}
	return nil
}

// Validate reports the first setting that cannot work, naming its key.
func (c *Config) Validate() error {
	if c.OpAMP.HeartbeatInterval < time.Second {
		return fmt.Errorf("opamp.heartbeat_interval: %s is below the 1s minimum", c.OpAMP.HeartbeatInterval)
	}
	if c.OpAMP.MaxConcurrentEnrollments < 0 {
		return fmt.Errorf("opamp.max_concurrent_enrollments: must not be negative")
	}
	if c.OpAMP.EnrollTimeout < 0 || c.OpAMP.ReadTimeout < 0 {
		return fmt.Errorf("opamp.enroll_timeout, opamp.read_timeout: must not be negative")
	}
	if err := c.OpAMP.Limits.validate(); err != nil {
		return err
	}
	for _, n := range c.OpAMP.ServerNames {
		if n == "" || strings.ContainsAny(n, " /:") && net.ParseIP(n) == nil {
			return fmt.Errorf("opamp.server_names: %q is not a DNS name or IP address", n)
		}
	}
	switch c.State.Driver {
	case "sqlite":
	case "postgres":
		if c.State.Postgres.DSN == "" {
			return fmt.Errorf("state.postgres.dsn: required when state.driver is postgres (or set %s)", EnvPostgresDSN)
		}
	default:
		return fmt.Errorf("state.driver: %q is not one of sqlite, postgres", c.State.Driver)
	}
	if c.Admin.MaxBodyBytes < 0 || c.Admin.MaxUploadBytes < 0 {
		return fmt.Errorf("admin.max_body_bytes, admin.max_upload_bytes: must not be negative (0 means the default)")
	}
	if c.Policies.MaxExpressionSize < 0 || c.Policies.MaxExpressionNesting < 0 {
		return fmt.Errorf("policies.max_expression_size, policies.max_expression_nesting: must not be negative (0 means the default)")
	}
	if c.State.SQLite.BusyTimeout < 0 {
		return fmt.Errorf("state.sqlite.busy_timeout: must not be negative")
	}
	if c.State.Postgres.MaxConns < 0 {
		return fmt.Errorf("state.postgres.max_conns: must not be negative")
	}
	if k := c.Certificates.IntermediateKey; k != "" && !strings.HasPrefix(k, "hashivault://") {
		return fmt.Errorf("certificates.intermediate_key: %q is not a hashivault://KEY URI", k)
	}
	if err := c.validateKeys(); err != nil {
		return err
	}
	switch c.Blobs.Driver {
	case "fs":
	case "s3":
		if c.Blobs.S3.Endpoint == "" || c.Blobs.S3.Bucket == "" {
			return errors.New("blobs.s3: endpoint and bucket are required when blobs.driver is s3")
		}
		if (c.Blobs.S3.AccessKey == "") != (c.Blobs.S3.SecretKey == "") {
			return fmt.Errorf("blobs.s3: set both the access key (blobs.s3.access_key or %s) and %s, or neither", EnvS3AccessKey, EnvS3SecretKey)
		}
	default:
		return fmt.Errorf("blobs.driver: %q (want fs or s3)", c.Blobs.Driver)
	}
	if c.Blobs.S3.Retention < 0 {
		return errors.New("blobs.s3.retention: must not be negative")
	}
	if u := c.Packages.DownloadBaseURL; u != "" && !strings.HasPrefix(u, "https://") {
		return fmt.Errorf("packages.download_base_url: %q is not an https URL (agents download over mTLS)", u)
	}
	if c.Packages.PresignExpiry < time.Minute || c.Packages.PresignExpiry > 7*24*time.Hour {
		return fmt.Errorf("packages.presign_expiry: %s is outside 1m..168h (S3's limit)", c.Packages.PresignExpiry)
	}
	if c.Packages.RecheckInterval < 0 {
		return errors.New("packages.recheck_interval: must not be negative")
	}
	if r := c.Packages.HaltFailureRate; r <= 0 || r > 1 {
		return fmt.Errorf("packages.halt_failure_rate: %v is not in (0, 1]", r)
	}
	if c.Packages.HaltMinFailures < 1 {
		return errors.New("packages.halt_min_failures: must be at least 1")
	}
	if c.CRL.NextUpdate < time.Minute {
		return fmt.Errorf("crl.next_update: %s is below the 1m minimum", c.CRL.NextUpdate)
	}
	if c.OCSP.Validity < time.Minute {
		return fmt.Errorf("ocsp.validity: %s is below the 1m minimum", c.OCSP.Validity)
	}
	for key, u := range map[string]string{"crl.url": c.CRL.URL, "ocsp.url": c.OCSP.URL} {
		if u != "" && !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
			return fmt.Errorf("%s: %q is not an http(s) URL", key, u)
		}
	}
	if c.Audit.CheckpointInterval < time.Second {
		return fmt.Errorf("audit.checkpoint_interval: %s is below the 1s minimum", c.Audit.CheckpointInterval)
	}
	if _, ok := c.Certificates.Profiles[c.Certificates.Profile]; !ok {
		return fmt.Errorf("certificates.profile: %q is not a profile in certificates.profiles", c.Certificates.Profile)
	}
	for name, p := range c.Certificates.Profiles {
		if p.RenewAt < 0 || p.RenewAt >= 1 {
			return fmt.Errorf("certificates.profiles.%s.renew_at: %v must be a fraction in (0, 1)", name, p.RenewAt)
		}
		if p.Jitter < 0 || p.Jitter >= 0.5 {
			return fmt.Errorf("certificates.profiles.%s.jitter: %v must be in [0, 0.5)", name, p.Jitter)
		}
		if p.RSAMinBits != 0 && p.RSAMinBits < 2048 {
			return fmt.Errorf("certificates.profiles.%s.rsa_min_bits: %d is below 2048", name, p.RSAMinBits)
		}
		if p.Lifetime != 0 && p.Lifetime < time.Second {
			return fmt.Errorf("certificates.profiles.%s.lifetime: %s is below 1s", name, p.Lifetime)
		}
		for _, k := range p.KeyTypes {
			switch k {
			case "ecdsa-p256", "ecdsa-p384", "ed25519", "rsa":
			default:
				return fmt.Errorf("certificates.profiles.%s.key_types: %q is not one of ecdsa-p256, ecdsa-p384, ed25519, rsa", name, k)
			}
		}
	}
	for name, d := range c.Destinations {
		if name == "" || name == "opamp" {
			return fmt.Errorf("destinations: %q is not a usable destination name", name)
		}
		if d.Endpoint == "" {
			return fmt.Errorf("destinations.%s.endpoint: required", name)
		}
		if _, ok := c.Certificates.Profiles[d.Profile]; d.Profile != "" && !ok {
			return fmt.Errorf("destinations.%s.profile: %q is not a profile in certificates.profiles", name, d.Profile)
		}
	}
	if c.Certificates.RotationRate < 0 {
		return fmt.Errorf("certificates.rotation_rate: must not be negative")
	}
	if c.Certificates.ScanInterval < 100*time.Millisecond || c.Certificates.OfferTimeout < time.Second {
		return fmt.Errorf("certificates.scan_interval (min 100ms) or certificates.offer_timeout (min 1s) too short")
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log.level: %q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		return fmt.Errorf("log.format: %q is not one of text, json", c.Log.Format)
	}
	return nil
}

// ResolvePath makes a config path relative to the data dir absolute.
func ResolvePath(dataDir, p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dataDir, p)
}

func defaultServerNames() []string {
	names := []string{"localhost", "127.0.0.1"}
	if h := hostname(); h != "" && h != "localhost" {
		names = append(names, h)
	}
	return names
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}

func setString(dst *string, def string) {
	if *dst == "" {
		*dst = def
	}
}
