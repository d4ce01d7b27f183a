-- Packages: trusted publisher keys and signed releases.

CREATE TABLE publishers (
	name TEXT PRIMARY KEY,
	public_key TEXT NOT NULL,
	key_hint TEXT NOT NULL,
	types TEXT NOT NULL,
	added_at_us BIGINT NOT NULL,
	added_by TEXT NOT NULL,
	removed_at_us BIGINT NOT NULL
);

CREATE TABLE releases (
	id TEXT PRIMARY KEY,
	type TEXT NOT NULL,
	version TEXT NOT NULL,
	platform TEXT NOT NULL,
	sha256 TEXT NOT NULL,
	size BIGINT NOT NULL,
	signature BYTEA NOT NULL,
	publisher TEXT NOT NULL,
	published_at_us BIGINT NOT NULL,
	published_by TEXT NOT NULL,
	state TEXT NOT NULL,
	state_reason TEXT NOT NULL,
	state_changed_at_us BIGINT NOT NULL
);

CREATE UNIQUE INDEX releases_identity ON releases (type, version, platform);
CREATE INDEX releases_sha256 ON releases (sha256);
