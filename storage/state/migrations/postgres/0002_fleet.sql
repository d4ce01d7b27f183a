-- OpAMP core and certificate lifecycle: enrollment tokens, the fleet
-- registry, issued certificates and their rotations.

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
	token_id TEXT NOT NULL,
	custom_capabilities TEXT NOT NULL
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
	confirmed_at_us BIGINT NOT NULL,
	retired_at_us BIGINT NOT NULL,
	profile TEXT NOT NULL,
	destination TEXT NOT NULL,
	renew_after_us BIGINT NOT NULL,
	offer_hash BYTEA NOT NULL,
	server_made_key BIGINT NOT NULL
);

CREATE INDEX certificates_agent ON certificates (uid, destination, status);
CREATE INDEX certificates_renew ON certificates (status, renew_after_us);
CREATE INDEX certificates_offer ON certificates (uid, offer_hash);

CREATE TABLE rotation_batches (
	id TEXT PRIMARY KEY,
	requested_by TEXT NOT NULL,
	selector TEXT NOT NULL,
	rate DOUBLE PRECISION NOT NULL,
	total BIGINT NOT NULL,
	created_at_us BIGINT NOT NULL
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
	attempts BIGINT NOT NULL,
	next_attempt_us BIGINT NOT NULL,
	created_at_us BIGINT NOT NULL,
	updated_at_us BIGINT NOT NULL,
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
