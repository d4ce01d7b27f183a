package agent

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// A fleet that lost its server together spreads its first reconnects over
// the whole window [0, base]: full jitter, not one wave at base.
func TestBackoffFirstDelaysSpread(t *testing.T) {
	src := rand.New(rand.NewPCG(19, 6))
	const agents = 1000
	var sum time.Duration
	seen := map[time.Duration]bool{}
	var quarters [4]int
	for range agents {
		d := newBackoff(failBase, failCap, src.Int64N).next()
		if d < 0 || d > failBase {
			t.Fatalf("first delay %s outside [0, %s]", d, failBase)
		}
		sum += d
		seen[d] = true
		quarters[min(int(4*d/failBase), 3)]++
	}
	if len(seen) < agents*9/10 {
		t.Fatalf("only %d distinct first delays among %d agents", len(seen), agents)
	}
	if mean := sum / agents; mean < failBase*45/100 || mean > failBase*55/100 {
		t.Fatalf("mean first delay %s, want about %s", mean, failBase/2)
	}
	for i, n := range quarters {
		if n < agents*18/100 || n > agents*32/100 {
			t.Fatalf("quarter %d of the window got %d of %d agents: %v", i, n, agents, quarters)
		}
	}
}

// The bound doubles from base to the cap and stays there, however many
// failures; every draw is within [0, bound].
func TestBackoffCapHolds(t *testing.T) {
	top := func(n int64) int64 { return n - 1 } // always the upper bound
	b := newBackoff(5*time.Second, time.Minute, top)
	want := []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second, time.Minute, time.Minute}
	for i, w := range want {
		if d := b.next(); d != w {
			t.Fatalf("wait %d with the top draw is %s, want %s", i, d, w)
		}
	}
	src := rand.New(rand.NewPCG(1, 2))
	b = newBackoff(time.Second, 30*time.Second, src.Int64N)
	for i := range 10000 {
		if d := b.next(); d < 0 || d > 30*time.Second {
			t.Fatalf("wait %d is %s, outside [0, 30s]", i, d)
		}
	}
	if got := b.bound(); got != 30*time.Second {
		t.Fatalf("bound after 10000 failures %s, want the cap", got)
	}
	// A cap below the base is raised to the base, never zero or negative.
	if got := newBackoff(5*time.Second, time.Second, top).next(); got != 5*time.Second {
		t.Fatalf("cap below base: wait %s", got)
	}
}

// After a successful connection the schedule starts over from base.
func TestBackoffResetAfterSuccess(t *testing.T) {
	top := func(n int64) int64 { return n - 1 }
	b := newBackoff(time.Second, 30*time.Second, top)
	for range 8 {
		b.next()
	}
	if d := b.next(); d != 30*time.Second {
		t.Fatalf("before reset %s, want the cap", d)
	}
	b.reset()
	if d := b.next(); d != time.Second {
		t.Fatalf("first wait after reset %s, want %s", d, time.Second)
	}
}

// opamp-go's log lines are how the agent learns why a reconnect failed: a
// 401 is a refusal, a 502 or a broken connection is the agent's to retry,
// a 503/429 (with Retry-After) stays with opamp-go, which honours it.
func TestRefusalLoggerRoutesFailures(t *testing.T) {
	var refused, failed []string
	l := refusalLogger{log: slog.New(slog.DiscardHandler),
		refused: func(m string) { refused = append(refused, m) },
		failed:  func(m string) { failed = append(failed, m) }}
	ctx := context.Background()
	l.Errorf(ctx, "Server responded with status=%v", "401 Unauthorized")
	l.Errorf(ctx, "Server responded with status=%v", "502 Bad Gateway")
	l.Errorf(ctx, "Unexpected error while receiving: %v", "websocket: close 1006 (abnormal closure): unexpected EOF")
	l.Errorf(ctx, "Server responded with status=%v", "503 Service Unavailable")
	l.Errorf(ctx, "Server responded with status=%v", "429 Too Many Requests")
	l.Errorf(ctx, "Connection failed (%v), will retry.", "websocket: bad handshake")
	if len(refused) != 1 || !strings.Contains(refused[0], "401") {
		t.Fatalf("refused %q, want the 401 only", refused)
	}
	if len(failed) != 2 || !strings.Contains(failed[0], "502") || !strings.Contains(failed[1], "1006") {
		t.Fatalf("failed %q, want the 502 and the broken connection", failed)
	}
}
