package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Config configures a load run.
type Config struct {
	// ServerURL, CAPEM and Heartbeat configure each agent (see AgentConfig).
	ServerURL string
	CAPEM     []byte
	Heartbeat time.Duration
	// Token is an enrollment token with at least Agents uses.
	Token string
	// Agents is how many agents to simulate.
	Agents int
	// Concurrency bounds agents enrolling at once. Zero means 50.
	Concurrency int
	// Hold keeps every agent connected this long after the last one
	// connected, before they all disconnect.
	Hold time.Duration
	// Progress receives a line a second while the run goes on. Nil means none.
	Progress io.Writer
	// CSRCapability and AcceptServerKeys configure how agents follow
	// rotations (see AgentConfig).
	CSRCapability, AcceptServerKeys bool
	// Revoke, after every agent connected (and Hold passed), revokes this
	// many of them one at a time through Revoker while the rest stay
	// connected, and reports the latencies.
	Revoke  int
	Revoker Revoker
}

// Revoker revokes one agent and reports how long the server took from the
// request to the last live connection closed, and how many it closed.
type Revoker func(ctx context.Context, uid string) (disconnect time.Duration, closed int, err error)

// Report is what a run measured.
type Report struct {
	Agents    int            `json:"agents"`
	Enrolled  int            `json:"enrolled"`
	Connected int            `json:"connected"`
	Errors    int            `json:"errors"`
	ErrorKind map[string]int `json:"error_kinds,omitempty"`
	Elapsed   time.Duration  `json:"elapsed_ns"`
	// ConnectRate is agents that enrolled and reconnected with mTLS, per
	// second of the run.
	ConnectRate float64       `json:"connect_rate_per_s"`
	EnrollP50   time.Duration `json:"enroll_p50_ns"`
	EnrollP99   time.Duration `json:"enroll_p99_ns"`
	EnrollMax   time.Duration `json:"enroll_max_ns"`
	ConnectP50  time.Duration `json:"mtls_connect_p50_ns"`
	ConnectP99  time.Duration `json:"mtls_connect_p99_ns"`
	// Rotated counts agents that reconnected with a new certificate during
	// the run (for example during --hold while an operator rotates).
	Rotated int `json:"rotated"`
	// Revoked counts revocations made (Config.Revoke); RevokeClosed the live
	// connections they closed. RevokeDisconnect* is the server's request to
	// last-connection-closed time, RevokeAPI* the whole API round trip
	// (which also waits for the new CRL).
	Revoked               int           `json:"revoked,omitempty"`
	RevokeClosed          int           `json:"revoke_closed_connections,omitempty"`
	RevokeDisconnectP50   time.Duration `json:"revoke_disconnect_p50_ns,omitempty"`
	RevokeDisconnectP99   time.Duration `json:"revoke_disconnect_p99_ns,omitempty"`
	RevokeDisconnectMax   time.Duration `json:"revoke_disconnect_max_ns,omitempty"`
	RevokeAPIP50          time.Duration `json:"revoke_api_p50_ns,omitempty"`
	RevokeAPIP99          time.Duration `json:"revoke_api_p99_ns,omitempty"`
	ConnectedDuringRevoke int           `json:"connected_during_revoke,omitempty"`
}

// Run simulates cfg.Agents agents: each enrolls (token + CSR), then
// reconnects with mTLS and stays connected, heartbeating, until all have
// connected and Hold has passed.
func Run(ctx context.Context, cfg Config) (Report, error) {
	if cfg.Agents <= 0 {
		return Report{}, errors.New("loadgen: agents must be positive")
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 50
	}
	var (
		mu                  sync.Mutex
		enrollLat, connLat  []time.Duration
		errKinds            = map[string]int{}
		agents              []*Agent
		enrolled, connected atomic.Int64
		failed, rotated     atomic.Int64
	)
	fail := func(stage string, err error) {
		failed.Add(1)
		mu.Lock()
		errKinds[stage+": "+trim(err.Error(), 120)]++
		mu.Unlock()
	}
	stopProgress := progress(cfg.Progress, cfg.Agents, &enrolled, &connected, &failed, &rotated)
	start := time.Now()
	sem := make(chan struct{}, cfg.Concurrency)
	var wg sync.WaitGroup
	for i := 0; i < cfg.Agents && ctx.Err() == nil; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			a, err := NewAgent(AgentConfig{ServerURL: cfg.ServerURL, CAPEM: cfg.CAPEM, Heartbeat: cfg.Heartbeat,
				CSRCapability: cfg.CSRCapability, AcceptServerKeys: cfg.AcceptServerKeys,
				OnRotated: func(string) { rotated.Add(1) }})
			if err != nil {
				fail("setup", err)
				return
			}
			actx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			t0 := time.Now()
			if err := a.Enroll(actx, cfg.Token); err != nil {
				fail("enroll", err)
				return
			}
			t1 := time.Now()
			enrolled.Add(1)
			if err := a.Connect(actx, a.UID, nil); err != nil {
				fail("mtls connect", err)
				a.Stop(context.Background())
				return
			}
			t2 := time.Now()
			connected.Add(1)
			mu.Lock()
			enrollLat = append(enrollLat, t1.Sub(t0))
			connLat = append(connLat, t2.Sub(t1))
			agents = append(agents, a)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	stopProgress()
	if cfg.Hold > 0 {
		stopHoldProgress := progress(cfg.Progress, cfg.Agents, &enrolled, &connected, &failed, &rotated)
		select {
		case <-time.After(cfg.Hold):
		case <-ctx.Done():
		}
		stopHoldProgress()
	}
	var revokeLat, revokeAPI []time.Duration
	revokedN, closedN, during := 0, 0, len(agents)
	if cfg.Revoke > 0 && cfg.Revoker != nil {
		for _, a := range agents[:min(cfg.Revoke, len(agents))] {
			if ctx.Err() != nil {
				break
			}
			t0 := time.Now()
			d, closed, err := cfg.Revoker(ctx, a.UID.String())
			if err != nil {
				fail("revoke", err)
				continue
			}
			revokeAPI = append(revokeAPI, time.Since(t0))
			revokeLat = append(revokeLat, d)
			revokedN++
			closedN += closed
		}
	}
	var swg sync.WaitGroup
	for _, a := range agents {
		swg.Add(1)
		go func() { defer swg.Done(); a.Stop(context.Background()) }()
	}
	swg.Wait()
	r := Report{
		Agents: cfg.Agents, Enrolled: int(enrolled.Load()), Connected: int(connected.Load()),
		Errors: int(failed.Load()), ErrorKind: errKinds, Elapsed: elapsed,
		ConnectRate: float64(connected.Load()) / elapsed.Seconds(),
		Rotated:     int(rotated.Load()),
	}
	r.EnrollP50, r.EnrollP99, r.EnrollMax = quantile(enrollLat, 0.50), quantile(enrollLat, 0.99), quantile(enrollLat, 1)
	r.ConnectP50, r.ConnectP99 = quantile(connLat, 0.50), quantile(connLat, 0.99)
	if revokedN > 0 {
		r.Revoked, r.RevokeClosed, r.ConnectedDuringRevoke = revokedN, closedN, during
		r.RevokeDisconnectP50, r.RevokeDisconnectP99 = quantile(revokeLat, 0.50), quantile(revokeLat, 0.99)
		r.RevokeDisconnectMax = quantile(revokeLat, 1)
		r.RevokeAPIP50, r.RevokeAPIP99 = quantile(revokeAPI, 0.50), quantile(revokeAPI, 0.99)
	}
	return r, ctx.Err()
}

func progress(w io.Writer, total int, enrolled, connected, failed, rotated *atomic.Int64) (stop func()) {
	if w == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				fmt.Fprintf(w, "%s enrolled %d/%d  connected %d  errors %d  rotated %d\n", time.Now().Format("15:04:05"),
					enrolled.Load(), total, connected.Load(), failed.Load(), rotated.Load())
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// quantile returns the q-quantile (nearest rank) of ds.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(q*float64(len(s))+0.5) - 1
	return s[max(0, min(i, len(s)-1))]
}

func trim(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
