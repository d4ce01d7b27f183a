-- Package targeting (operator pins, until policies take over) and per-agent
-- rollout state.

CREATE TABLE package_pins (
	type TEXT NOT NULL,
	-- canonical label selector "k=v,k2=v2"; '' is the type's default channel
	selector TEXT NOT NULL,
	version TEXT NOT NULL,
	pinned_at_us BIGINT NOT NULL,
	pinned_by TEXT NOT NULL,
	PRIMARY KEY (type, selector)
);

CREATE TABLE agent_packages (
	uid TEXT NOT NULL,
	type TEXT NOT NULL,
	version TEXT NOT NULL,
	sha256 TEXT NOT NULL,
	state TEXT NOT NULL,
	message TEXT NOT NULL,
	rule TEXT NOT NULL,
	downgrade INTEGER NOT NULL,
	from_version TEXT NOT NULL,
	offered_at_us BIGINT NOT NULL,
	updated_at_us BIGINT NOT NULL,
	PRIMARY KEY (uid, type)
);

CREATE INDEX agent_packages_release ON agent_packages (type, version);
