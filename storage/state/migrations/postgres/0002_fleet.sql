-- OpAMP core: enrollment tokens, the fleet registry and issued certificates.

CREATE TABLE enrollment_tokens (
	id TEXT PRIMARY KEY,
	token_hash BYTEA NOT NULL UNIQUE,
	labels TEXT NOT NULL,
	max_uses BIGINT NOT NULL,
	uses BIGINT NOT NULL,
	expires_at_us BIGINT NOT NULL,
	created_at_us BIGINT NOT NULL,
	created_by TEXT NOT NULL
);

CREATE TABLE agents (
	uid TEXT PRIMARY KEY,
	labels TEXT NOT NULL,
	description TEXT NOT NULL,
	capabilities BIGINT NOT NULL,
	health TEXT NOT NULL,
	effective_config_hash BYTEA NOT NULL,
	package_statuses TEXT NOT NULL,
	connected BIGINT NOT NULL,
	replica TEXT NOT NULL,
	remote_addr TEXT NOT NULL,
	transport TEXT NOT NULL,
	connected_since_us BIGINT NOT NULL,
	last_seen_us BIGINT NOT NULL,
	sequence_num BIGINT NOT NULL,
	cert_serial TEXT NOT NULL,
	cert_not_after_us BIGINT NOT NULL,
	enrolled_at_us BIGINT NOT NULL,
	token_id TEXT NOT NULL
);

CREATE TABLE certificates (
	serial TEXT PRIMARY KEY,
	uid TEXT NOT NULL,
	not_before_us BIGINT NOT NULL,
	not_after_us BIGINT NOT NULL,
	fingerprint TEXT NOT NULL,
	pem TEXT NOT NULL,
	status TEXT NOT NULL,
	issued_at_us BIGINT NOT NULL,
	confirmed_at_us BIGINT NOT NULL
);

CREATE INDEX certificates_uid ON certificates (uid);
