package opamp

import (
	"context"
	"errors"
	"testing"

	"golang.org/x/time/rate"
)

// TestRefusalAuditIsRateLimited: a flood of refused connections writes at
// most the burst to the audit log, and the next entry written says how many
// were left out, so nothing is silently lost.
func TestRefusalAuditIsRateLimited(t *testing.T) {
	var written []int
	a := newRefusalAuditor(rate.Every(1e18), 5, func(_ context.Context, _ refusal, suppressed int) error {
		written = append(written, suppressed)
		return nil
	})
	for i := 0; i < 1000; i++ {
		a.record(context.Background(), refusal{reason: reasonNoCredentials})
	}
	if len(written) != 5 {
		t.Fatalf("%d audit entries for 1000 refusals, want the burst of 5", len(written))
	}
	a.limiter.SetLimit(rate.Inf)
	a.record(context.Background(), refusal{reason: reasonNoCredentials})
	if got := written[len(written)-1]; got != 995 {
		t.Fatalf("next entry reports %d suppressed, want 995", got)
	}
}

func TestRefusalAuditKeepsCountWhenWriteFails(t *testing.T) {
	fail := true
	var last int
	a := newRefusalAuditor(rate.Inf, 1, func(_ context.Context, _ refusal, suppressed int) error {
		if fail {
			return errors.New("store down")
		}
		last = suppressed
		return nil
	})
	a.record(context.Background(), refusal{})
	a.record(context.Background(), refusal{})
	fail = false
	a.record(context.Background(), refusal{})
	if last != 2 {
		t.Fatalf("after two failed writes the next entry reports %d suppressed, want 2", last)
	}
}
