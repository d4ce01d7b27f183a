-- Revocation: revoked certificates, quarantined identities, the CRL and
-- the counters that must not repeat across restarts or replicas.

-- One row per revocation of one certificate. An undone certificateHold keeps
-- its row (undone_at_us > 0) for the compliance report; at most one row per
-- serial is in force.
CREATE TABLE revocations (
	id TEXT PRIMARY KEY,
	request_id TEXT NOT NULL,
	serial TEXT NOT NULL,
	uid TEXT NOT NULL,
	destination TEXT NOT NULL,
	reason TEXT NOT NULL,
	note TEXT NOT NULL,
	actor TEXT NOT NULL,
	requested_at_us INTEGER NOT NULL,
	revoked_at_us INTEGER NOT NULL,
	not_after_us INTEGER NOT NULL,
	prior_status TEXT NOT NULL,
	audit_seq INTEGER NOT NULL,
	change_seq INTEGER NOT NULL,
	disconnected_at_us INTEGER NOT NULL,
	disconnected_conns INTEGER NOT NULL,
	presented INTEGER NOT NULL,
	last_presented_at_us INTEGER NOT NULL,
	undone_at_us INTEGER NOT NULL,
	undone_by TEXT NOT NULL,
	undo_note TEXT NOT NULL
);

CREATE UNIQUE INDEX revocations_in_force ON revocations (serial) WHERE undone_at_us = 0;
CREATE INDEX revocations_change ON revocations (change_seq);
CREATE INDEX revocations_requested ON revocations (requested_at_us);
CREATE INDEX revocations_request ON revocations (request_id);

CREATE TABLE quarantine (
	uid TEXT PRIMARY KEY,
	reason TEXT NOT NULL,
	note TEXT NOT NULL,
	actor TEXT NOT NULL,
	request_id TEXT NOT NULL,
	since_us INTEGER NOT NULL
);

-- Monotonic counters (the CRL number, the revocation change sequence)
-- live in the database, never in a process's memory.
CREATE TABLE counters (
	name TEXT PRIMARY KEY,
	value INTEGER NOT NULL
);

INSERT INTO counters (name, value) VALUES ('crl_number', 0);
INSERT INTO counters (name, value) VALUES ('revocation_change', 0);

-- The newest CRL of each issuer (by subject key id, hex); every replica
-- serves the highest number.
CREATE TABLE crls (
	issuer TEXT PRIMARY KEY,
	number INTEGER NOT NULL,
	this_update_us INTEGER NOT NULL,
	next_update_us INTEGER NOT NULL,
	entries INTEGER NOT NULL,
	der BLOB NOT NULL
);
