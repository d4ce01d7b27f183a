package config

// Template is the config file `trustamp init` writes: every key, commented,
// at its default. config_test.go checks that it parses to Default(), so the
// file and the code cannot drift apart.
const Template = `# trustamp configuration. Every key is optional; the values shown are the
# defaults. Unknown keys are an error. Reference: README.md, "Configuration".

# SPIFFE trust domain of agent identities:
# spiffe://<trust_domain>/agent/<instance_uid>
trust_domain: trustamp.local

opamp:
  # Listen address for agents (OpAMP over WebSocket and HTTP, path /v1/opamp).
  addr: ":4320"
  # DNS names and IP addresses in the listener's TLS certificate (issued by
  # trustamp's own CA; reissued on start when this list changes).
  # Default: localhost, 127.0.0.1 and this machine's hostname.
  # server_names: [localhost, 127.0.0.1, opamp.example.com]
  # Heartbeat interval sent to agents in every connection settings offer.
  heartbeat_interval: 30s
  # Enrollments in progress at once (CSRs being handled; idle sockets hold
  # none); beyond it agents are told to retry (HTTP 429 + Retry-After, or
  # ServerErrorResponse Unavailable).
  max_concurrent_enrollments: 256
  # An enrolling (token) WebSocket is closed after this; an idle socket never
  # holds an enrollment slot.
  enroll_timeout: 10s
  # Time allowed to read one plain-HTTP OpAMP request body.
  read_timeout: 10s
  # Bounds on each AgentToServer message (refused with BadRequest naming the
  # key). Zero or absent means the default shown.
  limits:
    message_size: 4194304        # bytes, after decompression, both transports
    nesting_depth: 16            # nested attribute values / health maps
    description_attributes: 512  # description key-values at every level
    description_size: 65536      # bytes
    health_size: 262144          # bytes
    effective_config_size: 1048576
    package_statuses: 256
    package_status_size: 4096    # bytes per package status
  # Name of this server in the fleet registry. Default: the hostname.
  # replica_id: trustamp-1

admin:
  # Listen address of the admin API. Keep it on loopback unless a TLS-terminating
  # proxy in front of it is the only way in.
  addr: "127.0.0.1:4321"
  # Largest JSON request body, in bytes; a larger one is refused with 413
  # unread. Default (0): 1 MiB.
  # max_body_bytes: 1048576
  # Largest package artifact uploaded with POST /api/v1/packages, in bytes.
  # Default (0): 1 GiB.
  # max_upload_bytes: 1073741824

state:
  # sqlite (one replica) or postgres (several replicas sharing one database).
  driver: sqlite
  sqlite:
    # Database file; relative paths are inside the data dir.
    path: state.db
    # How long a query waits for a lock before failing.
    busy_timeout: 5s
  postgres:
    # Connection string. Prefer the environment variable TRUSTAMP_POSTGRES_DSN,
    # which overrides this key, so the password stays out of this file.
    dsn: ""
    # Maximum connections in the pool.
    max_conns: 10

audit:
  # How often the head of the audit hash chain is signed with the audit key
  # (only when new entries exist). Minimum 1s.
  checkpoint_interval: 1m

blobs:
  # Where release artifacts are stored: fs (the data dir) or s3 (MinIO, AWS S3,
  # any S3-compatible store).
  driver: fs
  # The fs store's directory, relative to the data dir.
  dir: blobs
  s3:
    # host[:port], without a scheme.
    endpoint: ""
    bucket: ""
    region: ""
    # The secret key is read only from the environment (TRUSTAMP_S3_SECRET_KEY);
    # TRUSTAMP_S3_ACCESS_KEY overrides this key.
    access_key: ""
    # Plain HTTP: only for a MinIO on loopback.
    insecure: false
    # Keep each published blob under S3 object lock (governance mode) this
    # long, e.g. 2160h. Needs a bucket with object lock. Empty: none.
    retention: 0s

packages:
  # https://host:port agents download /v1/packages/<sha256> from. Empty means
  # the address each agent used to reach the OpAMP endpoint.
  download_base_url: ""
  # With blobs.driver s3: offer presigned object-storage URLs instead of the
  # server's own download endpoint.
  presign: true
  # Life of a presigned URL (1m..168h).
  presign_expiry: 1h
  # A stored blob is hashed again before it is offered or served when its
  # last check is older than this.
  recheck_interval: 1h
  # A rollout halts (no new offers of the release, audited) when this share of
  # the agents offered a release reported a failed install, and at least
  # halt_min_failures did.
  halt_failure_rate: 0.2
  halt_min_failures: 3

keys:
  # Custodian of the server's private keys (CA keys, audit key, OCSP signer):
  # age (files in <data dir>/keys encrypted to the data dir's age identity) or
  # vault-kv (Vault KV v2 over the vault connection below; the data dir then
  # holds no private key). Move existing keys with
  # ` + "`trustamp keys migrate --to vault-kv`" + `.
  custody: age
  vault_kv:
    # KV v2 mount and the prefix under it (empty: secret, trustamp/keys).
    mount: ""
    path: ""

vault:
  # The Vault that keys.custody vault-kv and the vault-pki issuer use, e.g.
  # https://vault.example:8200.
  address: ""
  # token (TRUSTAMP_VAULT_TOKEN) or approle (role_id here, the secret ID in
  # TRUSTAMP_VAULT_SECRET_ID). Empty means token.
  auth: ""
  role_id: ""
  # Where AppRole is mounted (empty: approle).
  approle_mount: ""
  # CA bundle that verifies Vault's TLS certificate (empty: system roots).
  ca_file: ""
  # Vault Enterprise namespace, if any.
  namespace: ""
  # Bound on each request: an unreachable Vault fails fast (Unavailable with
  # retry for agents) instead of hanging. 0 means 10s.
  timeout: 0s

issuers:
  vault_pki:
    # PKI mount and the role CSRs are signed under (pki/sign/<role>), for
    # profiles with issuer: vault-pki.
    mount: ""
    role: ""
    # PEM of the CA the role's certificates chain to: the pinned trust anchor
    # for agents it signs (relative paths: the data dir).
    ca_file: ""
  step_ca:
    # A remote step-ca, for profiles with issuer: step-ca: its URL, its root
    # (verifies the connection; the trust anchor for agents it signs), and the
    # JWK provisioner (its password in TRUSTAMP_STEPCA_PASSWORD).
    url: ""
    root_file: ""
    provisioner: ""
    # Bound on each request (0 means 10s).
    timeout: 0s

policies:
  # Directory of CEL policy files (*.yaml): certificate profiles, package
  # targets, staged rollouts, automatic revocation. Reloaded when a file
  # changes and on POST /api/v1/policies/reload; a file that does not load
  # is refused and the previous policies stay in force. Empty means
  # <data dir>/policies; relative paths are relative to the data dir.
  dir: ""
  # Bound on one evaluation of one CEL condition, in CEL cost units. A rule
  # whose estimated worst case is higher is refused when the files load (and
  # by policy simulate); an evaluation reaching it at run time stops and
  # counts as no match. Default (0): 100000.
  # cost_limit: 100000
  # Longest condition, in characters. Default (0): 4096.
  # max_expression_size: 4096
  # Deepest nesting of a condition (parentheses, calls). Default (0): 32.
  # max_expression_nesting: 32
  # Bound on all the CEL evaluations of one policy simulate request together
  # (every agent, current and candidate rules). Default (0): 10000000.
  # simulate_cost_limit: 10000000

crl:
  # Validity window of each CRL; a new one is made on every revocation and at
  # least every half of this. Minimum 1m.
  next_update: 1h
  # Distribution point written into agent certificates. Empty means
  # https://<first opamp.server_names>:<opamp port>/v1/crl.
  url: ""

ocsp:
  # How long relying parties may cache an OCSP response (its nextUpdate).
  # Minimum 1m.
  validity: 1h
  # Responder written into agent certificates. Empty means
  # https://<first opamp.server_names>:<opamp port>/v1/ocsp.
  url: ""

certificates:
  # Profile used for agents' OpAMP connection certificates.
  profile: default
  # Server-initiated rotations per second, fleet-wide.
  rotation_rate: 50
  # How often the scheduler looks for certificates past their renew point.
  scan_interval: 10s
  # An offer (or CSR request) not confirmed within this is marked stalled and
  # retried with backoff.
  offer_timeout: 2m
  # Minimum average interval between CSRs one agent may send on its own.
  agent_csr_interval: 10s
  # Keep the intermediate CA key in Vault Transit: hashivault://KEY (an
  # ecdsa-p256 Transit key; VAULT_ADDR and VAULT_TOKEN in the environment).
  # The next ` + "`trustamp ca rotate-intermediate`" + ` certifies that key; from then
  # on issuance, CRLs and OCSP are signed by Vault. Empty: the key store.
  intermediate_key: ""
  profiles:
    default:
      # Certificate lifetime; short lifetimes bound what a missed revocation costs.
      lifetime: 24h
      # Rotate after this fraction of the lifetime...
      renew_at: 0.6667
      # ...moved earlier by up to this fraction, per certificate, so a fleet
      # enrolled together does not renew together.
      jitter: 0.05
      # NotBefore is backdated by this much for clock skew.
      backdate: 1m
      # Key types accepted in CSRs: ecdsa-p256, ecdsa-p384, ed25519, rsa.
      key_types: [ecdsa-p256, ecdsa-p384, ed25519, rsa]
      rsa_min_bits: 2048
      # Let the server generate key pairs for agents that cannot send a CSR.
      server_made_keys: false
      # Extra DNS SANs from agent attributes, e.g. "{host.name}.agents.example.com".
      # Each placeholder must expand to a single DNS label; none by default.
      # san_templates: []
      # Who signs: embedded (trustamp's CA), vault-pki (issuers.vault_pki) or
      # step-ca (issuers.step_ca).
      issuer: embedded

# Other destinations agents get client certificates for, besides OpAMP:
# own_metrics, own_traces, own_logs (agents that report their own telemetry),
# or any other name (sent in other_connections). Each gets its own
# certificate, rotated like the OpAMP one. None by default.
# destinations:
#   own_metrics:
#     endpoint: https://metrics.example.com:4318
#     headers: {X-Scope-OrgID: fleet}
#     profile: default

log:
  # debug, info, warn or error.
  level: info
  # text or json.
  format: text
`
