package agent

import (
	"context"
	"math/rand/v2"
	"time"
)

// Reconnect schedules ("full jitter"): the wait before retry n (counting
// from 0 after the last successful connection) is drawn uniformly from
// [0, min(cap, base*2^n)], so a fleet that lost its server at the same
// moment spreads its reconnects over the whole window instead of
// arriving in waves.
const (
	// failBase and failCap bound the waits after a failed connection
	// (network, server down, lost connection) and a failed enrollment.
	failBase, failCap = time.Second, 30 * time.Second
	// refusedBase bounds the first wait after the server refused the
	// agent (revoked or quarantined); Config.MaxBackoff is the cap.
	refusedBase = 5 * time.Second
)

// backoff is one full-jitter exponential schedule. Its zero value is not
// usable; newBackoff sets base and limit (the cap). Not safe for concurrent use: each
// retry loop owns its own.
type backoff struct {
	base, limit time.Duration
	attempt     int
	// int64n returns a uniform value in [0, n); nil means math/rand/v2.
	int64n func(n int64) int64
}

func newBackoff(base, limit time.Duration, int64n func(int64) int64) *backoff {
	if int64n == nil {
		int64n = rand.Int64N
	}
	return &backoff{base: base, limit: max(limit, base), int64n: int64n}
}

// bound is the largest wait of the next attempt: min(limit, base*2^attempt).
func (b *backoff) bound() time.Duration {
	d := b.base
	for i := 0; i < b.attempt && d < b.limit; i++ {
		d *= 2
	}
	return min(d, b.limit)
}

// next returns the wait before the next attempt, uniform in [0, bound],
// and counts the attempt.
func (b *backoff) next() time.Duration {
	d := time.Duration(b.int64n(int64(b.bound()) + 1))
	if b.bound() < b.limit {
		b.attempt++
	}
	return d
}

// reset starts the schedule over: called after a successful connection.
func (b *backoff) reset() { b.attempt = 0 }

// sleepCtx waits d or until ctx ends; it is Agent.sleep's default.
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
