package audit

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/trustamp/trustamp/storage/state"
)

// Record is what a caller knows about a trust operation; Append assigns its
// sequence number, time and hashes.
type Record struct {
	// Actor is who did it: "admin:<token id>", "agent:<uid>", "system".
	Actor string
	// Action is a dotted verb, e.g. "cert.issue", "agent.impersonation".
	Action string
	// Subject is what it was done to: an agent uid, a serial, a release.
	Subject string
	// Details is any value that marshals to a JSON object. Never put secrets
	// or private keys here: the log is exported to auditors.
	Details any
}

// AppendTx is what Append needs from a transaction; *state.Tx has it. The
// caller passes the transaction that makes the change being audited, so the
// two commit together.
type AppendTx interface {
	AuditHead(ctx context.Context) (int64, []byte, error)
	InsertAuditEntry(ctx context.Context, r state.AuditRow) error
}

// Config configures a Log.
type Config struct {
	// Clock returns the current time. Nil means time.Now.
	Clock func() time.Time
	// Key signs checkpoints. Nil means the Log can append but not checkpoint.
	Key ed25519.PrivateKey
	// Logger receives checkpoint loop errors. Nil means slog.Default().
	Logger *slog.Logger
	// Anchor receives every checkpoint that is the chain's latest, made here
	// or by another replica, to keep outside the database. Nil means none.
	Anchor Anchor
}

// Anchor keeps the latest signed checkpoint outside the database (next to
// the keys), so a database rolled back to before it is detected. Advance is
// called with checkpoints in any order and must only move forward.
type Anchor interface {
	Advance(ctx context.Context, c Checkpoint) error
}

// Log appends to the chain and signs checkpoints.
type Log struct {
	clock  func() time.Time
	key    ed25519.PrivateKey
	keyID  string
	logger *slog.Logger
	anchor Anchor
}

// New returns a Log.
func New(cfg Config) *Log {
	l := &Log{clock: cfg.Clock, key: cfg.Key, logger: cfg.Logger, anchor: cfg.Anchor}
	if l.clock == nil {
		l.clock = time.Now
	}
	if l.logger == nil {
		l.logger = slog.Default()
	}
	if l.key != nil {
		l.keyID = KeyID(l.key.Public().(ed25519.PublicKey))
	}
	return l
}

// Append writes r as the next entry of the chain inside tx.
func (l *Log) Append(ctx context.Context, tx AppendTx, r Record) (Entry, error) {
	if r.Actor == "" || r.Action == "" {
		return Entry{}, fmt.Errorf("audit: append: actor and action are required (got %q, %q)", r.Actor, r.Action)
	}
	details := []byte("{}")
	if r.Details != nil {
		raw, err := json.Marshal(r.Details)
		if err != nil {
			return Entry{}, fmt.Errorf("audit: append %s: details: %w", r.Action, err)
		}
		if details, err = canonicalJSON(raw); err != nil {
			return Entry{}, fmt.Errorf("audit: append %s: details: %w", r.Action, err)
		}
		if len(details) == 0 || details[0] != '{' {
			return Entry{}, fmt.Errorf("audit: append %s: details must be a JSON object", r.Action)
		}
	}
	seq, prev, err := tx.AuditHead(ctx)
	if err != nil {
		return Entry{}, fmt.Errorf("audit: append %s: %w", r.Action, err)
	}
	e := Entry{
		Seq:      seq + 1,
		Time:     l.clock().UTC().Truncate(time.Microsecond),
		Actor:    r.Actor,
		Action:   r.Action,
		Subject:  r.Subject,
		Details:  details,
		PrevHash: prev,
	}
	if e.Hash, err = ComputeHash(e); err != nil {
		return Entry{}, err
	}
	row := state.AuditRow{
		Seq: e.Seq, Time: e.Time, Actor: e.Actor, Action: e.Action, Subject: e.Subject,
		Details: string(e.Details), PrevHash: e.PrevHash, Hash: e.Hash,
	}
	if err := tx.InsertAuditEntry(ctx, row); err != nil {
		return Entry{}, fmt.Errorf("audit: append %s: %w", r.Action, err)
	}
	return e, nil
}

// Updater runs a read-write transaction; *state.Store is one.
type Updater interface {
	Update(ctx context.Context, fn func(*state.Tx) error) error
}

// Checkpoint signs the current head of the chain if it moved since the last
// checkpoint. It reports whether it wrote one, and returns the chain's latest
// checkpoint either way (zero when there is none). Replicas may all call it:
// the chain lock taken by AuditHead makes one of them win and the others see
// no new entries. The latest checkpoint, once its signature checks, is given
// to the Anchor.
func (l *Log) Checkpoint(ctx context.Context, store Updater) (Checkpoint, bool, error) {
	if l.key == nil {
		return Checkpoint{}, false, errors.New("audit: checkpoint: no audit key configured")
	}
	var (
		cp      Checkpoint
		written bool
	)
	err := store.Update(ctx, func(tx *state.Tx) error {
		seq, head, err := tx.AuditHead(ctx)
		if err != nil || seq == 0 {
			return err
		}
		last, err := tx.LatestCheckpoint(ctx)
		switch {
		case errors.Is(err, state.ErrNotFound):
		case err != nil:
			return err
		case last.Seq >= seq:
			cp = checkpointFromRow(last)
			return nil
		}
		cp = Checkpoint{Seq: seq, HeadHash: head, Time: l.clock().UTC().Truncate(time.Microsecond), KeyID: l.keyID}
		cp.Signature = ed25519.Sign(l.key, cp.signedMessage())
		written = true
		return tx.InsertCheckpoint(ctx, state.CheckpointRow{
			Seq: cp.Seq, HeadHash: cp.HeadHash, Time: cp.Time, KeyID: cp.KeyID, Signature: cp.Signature,
		})
	})
	if err != nil {
		return Checkpoint{}, false, fmt.Errorf("audit: checkpoint: %w", err)
	}
	if l.anchor != nil && cp.Seq > 0 {
		// A checkpoint another replica wrote is anchored only if it is ours:
		// a forged row must not move the anchor.
		if !cp.VerifySignature(l.key.Public().(ed25519.PublicKey)) {
			return cp, written, fmt.Errorf("audit: checkpoint at entry %d in the database does not verify under audit key %s: not anchoring it", cp.Seq, l.keyID)
		}
		if err := l.anchor.Advance(ctx, cp); err != nil {
			return cp, written, fmt.Errorf("audit: anchor checkpoint %d: %w", cp.Seq, err)
		}
	}
	return cp, written, nil
}

// RunCheckpoints checkpoints every interval until ctx ends, and once more on
// the way out so a clean shutdown leaves the whole chain signed. tick is
// injected so tests drive it without waiting; nil means a real ticker.
func (l *Log) RunCheckpoints(ctx context.Context, store Updater, interval time.Duration, tick <-chan time.Time) error {
	if tick == nil {
		t := time.NewTicker(interval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			final, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if _, _, err := l.Checkpoint(final, store); err != nil {
				l.logger.Error("final audit checkpoint failed", "err", err)
			}
			return nil
		case <-tick:
			if cp, ok, err := l.Checkpoint(ctx, store); err != nil {
				if ctx.Err() != nil {
					continue // shutting down: the final checkpoint follows
				}
				l.logger.Error("audit checkpoint failed", "err", err)
			} else if ok {
				l.logger.Debug("audit checkpoint", "seq", cp.Seq, "head", cp.HeadHash.String())
			}
		}
	}
}
