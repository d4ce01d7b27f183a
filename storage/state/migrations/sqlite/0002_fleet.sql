-- OpAMP core and certificate lifecycle: enrollment tokens, the fleet
-- registry, issued certificates and their rotations.

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
	token_id TEXT NOT NULL,
	custom_capabilities TEXT NOT NULL
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
	confirmed_at_us INTEGER NOT NULL,
	retired_at_us INTEGER NOT NULL,
	profile TEXT NOT NULL,
	destination TEXT NOT NULL,
	renew_after_us INTEGER NOT NULL,
	offer_hash BLOB NOT NULL,
	server_made_key INTEGER NOT NULL
);

CREATE INDEX certificates_agent ON certificates (uid, destination, status);
CREATE INDEX certificates_renew ON certificates (status, renew_after_us);
CREATE INDEX certificates_offer ON certificates (uid, offer_hash);

CREATE TABLE rotation_batches (
	id TEXT PRIMARY KEY,
	requested_by TEXT NOT NULL,
	selector TEXT NOT NULL,
	rate REAL NOT NULL,
	total INTEGER NOT NULL,
	created_at_us INTEGER NOT NULL
);

CREATE TABLE rotations (
	id TEXT PRIMARY KEY,
	batch_id TEXT NOT NULL,
	uid TEXT NOT NULL,
	destination TEXT NOT NULL,
	reason TEXT NOT NULL,
	state TEXT NOT NULL,
	method TEXT NOT NULL,
	serial TEXT NOT NULL,
	attempts INTEGER NOT NULL,
	next_attempt_us INTEGER NOT NULL,
	created_at_us INTEGER NOT NULL,
	updated_at_us INTEGER NOT NULL,
	error TEXT NOT NULL
);

CREATE INDEX rotations_uid ON rotations (uid, destination, state);
CREATE INDEX rotations_due ON rotations (state, next_attempt_us);
CREATE INDEX rotations_batch ON rotations (batch_id);
CREATE INDEX rotations_serial ON rotations (serial);

-- At most one unfinished rotation per agent and destination, even with
-- several replicas scheduling at once.
CREATE UNIQUE INDEX rotations_one_open ON rotations (uid, destination)
	WHERE state IN ('pending', 'requested', 'offered', 'stalled', 'awaiting-agent-renewal');
