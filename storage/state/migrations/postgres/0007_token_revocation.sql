-- Enrollment tokens can be revoked before they expire or are used up.

ALTER TABLE enrollment_tokens ADD COLUMN revoked_at_us BIGINT;
ALTER TABLE enrollment_tokens ADD COLUMN revoked_by TEXT NOT NULL DEFAULT '';
ALTER TABLE admin_tokens ADD COLUMN revoked_by TEXT NOT NULL DEFAULT '';
ALTER TABLE admin_tokens ADD COLUMN created_by TEXT NOT NULL DEFAULT '';
