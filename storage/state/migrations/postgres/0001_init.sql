-- Foundation: key/value metadata, admin tokens, the audit chain and its
-- signed checkpoints. Times are integer microseconds since the Unix epoch.

CREATE TABLE meta (
	key TEXT PRIMARY KEY,
	value TEXT NOT NULL
);

CREATE TABLE admin_tokens (
	id TEXT PRIMARY KEY,
	name TEXT NOT NULL,
	role TEXT NOT NULL,
	token_hash BYTEA NOT NULL UNIQUE,
	created_at_us BIGINT NOT NULL,
	revoked_at_us BIGINT
);

CREATE TABLE audit_entries (
	seq BIGINT PRIMARY KEY,
	at_us BIGINT NOT NULL,
	actor TEXT NOT NULL,
	action TEXT NOT NULL,
	subject TEXT NOT NULL,
	details TEXT NOT NULL,
	prev_hash BYTEA NOT NULL,
	hash BYTEA NOT NULL
);

CREATE INDEX audit_entries_at ON audit_entries (at_us);

CREATE TABLE audit_checkpoints (
	seq BIGINT PRIMARY KEY,
	head_hash BYTEA NOT NULL,
	at_us BIGINT NOT NULL,
	key_id TEXT NOT NULL,
	signature BYTEA NOT NULL
);
