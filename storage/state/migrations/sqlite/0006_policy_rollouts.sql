-- When each staged rollout (a rollout policy rule applied to one release)
-- started: waves open one soak period apart from here, on every replica and
-- across restarts. The first replica to start it wins.

CREATE TABLE rollout_starts (
	type TEXT NOT NULL,
	version TEXT NOT NULL,
	rule TEXT NOT NULL,
	started_at_us INTEGER NOT NULL,
	PRIMARY KEY (type, version, rule)
);
