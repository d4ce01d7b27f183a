-- OpAMP core: enrollment tokens, the fleet registry and issued certificates.

CREATE TABLE enrollment_tokens (
	id TEXT PRIMARY KEY,
	token_hash BLOB NOT NULL UNIQUE,
	labels TEXT NOT NULL,
	max_uses INTEGER NOT NULL,
	uses INTEGER NOT NULL,
	expires_at_us INTEGER NOT NULL,
	created_at_us INTEGER NOT NULL,
	created_by TEXT NOT NULL
);

CREATE TABLE agents (
	uid TEXT PRIMARY KEY,
	labels TEXT NOT NULL,
	description TEXT NOT NULL,
	capabilities INTEGER NOT NULL,
	health TEXT NOT NULL,
	effective_config_hash BLOB NOT NULL,
	package_statuses TEXT NOT NULL,
	connected INTEGER NOT NULL,
	replica TEXT NOT NULL,
	remote_addr TEXT NOT NULL,
	transport TEXT NOT NULL,
	connected_since_us INTEGER NOT NULL,
	last_seen_us INTEGER NOT NULL,
	sequence_num INTEGER NOT NULL,
	cert_serial TEXT NOT NULL,
	cert_not_after_us INTEGER NOT NULL,
	enrolled_at_us INTEGER NOT NULL,
	token_id TEXT NOT NULL
);

CREATE TABLE certificates (
	serial TEXT PRIMARY KEY,
	uid TEXT NOT NULL,
	not_before_us INTEGER NOT NULL,
	not_after_us INTEGER NOT NULL,
	fingerprint TEXT NOT NULL,
	pem TEXT NOT NULL,
	status TEXT NOT NULL,
	issued_at_us INTEGER NOT NULL,
	confirmed_at_us INTEGER NOT NULL
);

CREATE INDEX certificates_uid ON certificates (uid);
