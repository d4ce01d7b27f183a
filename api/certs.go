package api

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trustamp/trustamp/storage/state"
)

// Certificate is the API's view of an issued certificate (without its PEM).
type Certificate struct {
	Serial        string     `json:"serial"`
	UID           string     `json:"uid"`
	Status        string     `json:"status"`
	Profile       string     `json:"profile"`
	Destination   string     `json:"destination"`
	NotBefore     time.Time  `json:"not_before"`
	NotAfter      time.Time  `json:"not_after"`
	RenewAfter    *time.Time `json:"renew_after,omitempty"`
	IssuedAt      time.Time  `json:"issued_at"`
	ConfirmedAt   *time.Time `json:"confirmed_at,omitempty"`
	RetiredAt     *time.Time `json:"retired_at,omitempty"`
	Fingerprint   string     `json:"fingerprint_sha256"`
	ServerMadeKey bool       `json:"server_made_key"`
}

// listCertificates: GET /api/v1/certificates?expiring_within=6h&uid=U&status=S
func (a *API) listCertificates(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := state.CertFilter{UID: q.Get("uid"), Limit: 10000}
	for _, s := range q["status"] {
		f.Statuses = append(f.Statuses, state.CertStatus(s))
	}
	if len(f.Statuses) == 0 {
		f.Statuses = []state.CertStatus{state.CertOffered, state.CertConfirmed}
	}
	if e := q.Get("expiring_within"); e != "" {
		d, err := time.ParseDuration(e)
		if err != nil || d <= 0 {
			writeError(w, http.StatusBadRequest, "expiring_within=%q: want a positive duration such as 6h", e)
			return
		}
		f.ExpiringBefore = a.cfg.Clock().Add(d)
	}
	var certs []state.Certificate
	if err := a.cfg.Store.View(r.Context(), func(tx *state.Tx) (err error) { certs, err = tx.Certificates(r.Context(), f); return err }); err != nil {
		a.log.Error("list certificates", "err", err)
		writeError(w, http.StatusServiceUnavailable, "state store unavailable")
		return
	}
	out := make([]Certificate, 0, len(certs))
	for _, c := range certs {
		out = append(out, Certificate{
			Serial: c.Serial, UID: c.UID, Status: string(c.Status), Profile: c.Profile, Destination: c.Destination,
			NotBefore: c.NotBefore, NotAfter: c.NotAfter, RenewAfter: timePtr(c.RenewAfter), IssuedAt: c.IssuedAt,
			ConfirmedAt: timePtr(c.ConfirmedAt), RetiredAt: timePtr(c.RetiredAt), Fingerprint: c.Fingerprint, ServerMadeKey: c.ServerMadeKey,
		})
	}
	writeJSON(w, http.StatusOK, out)
}

// certCollector reports certificate and rotation counts from the store at
// scrape time, so every replica reports the same fleet-wide numbers.
type certCollector struct {
	store   *state.Store
	clock   func() time.Time
	certs   *prometheus.Desc
	soonest *prometheus.Desc
	rots    *prometheus.Desc
	agents  *prometheus.Desc
}

// NewCertCollector makes the collector for /metrics.
func NewCertCollector(store *state.Store, clock func() time.Time) prometheus.Collector {
	if clock == nil {
		clock = time.Now
	}
	return &certCollector{
		store:   store,
		clock:   clock,
		certs:   prometheus.NewDesc("trustamp_certificates", "Unexpired agent certificates by state.", []string{"state"}, nil),
		soonest: prometheus.NewDesc("trustamp_certificate_soonest_expiry_seconds", "Seconds until the soonest confirmed certificate expires.", nil, nil),
		rots:    prometheus.NewDesc("trustamp_rotations", "Rotations by state.", []string{"state"}, nil),
		agents: prometheus.NewDesc("trustamp_agents", "Registered agents by last transport and connection state, fleet-wide.",
			[]string{"transport", "connected"}, nil),
	}
}

func (c *certCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.certs
	ch <- c.soonest
	ch <- c.rots
}

func (c *certCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	now := c.clock()
	_ = c.store.View(ctx, func(tx *state.Tx) error {
		counts, soonest, err := tx.CertCounts(ctx, now)
		if err != nil {
			return err
		}
		for _, st := range []state.CertStatus{state.CertOffered, state.CertConfirmed, state.CertRetired} {
			ch <- prometheus.MustNewConstMetric(c.certs, prometheus.GaugeValue, float64(counts[st]), string(st))
		}
		if !soonest.IsZero() {
			ch <- prometheus.MustNewConstMetric(c.soonest, prometheus.GaugeValue, soonest.Sub(now).Seconds())
		}
		rots, err := tx.RotationCounts(ctx)
		if err != nil {
			return err
		}
		for _, st := range append(state.OpenRotationStates, state.RotationConfirmed) {
			ch <- prometheus.MustNewConstMetric(c.rots, prometheus.GaugeValue, float64(rots[st]), string(st))
		}
		agents, err := tx.AgentCounts(ctx)
		if err != nil {
			return err
		}
		for transport, byState := range agents {
			if transport == "" {
				transport = "none"
			}
			for connected, n := range byState {
				ch <- prometheus.MustNewConstMetric(c.agents, prometheus.GaugeValue, float64(n), transport, strconv.FormatBool(connected))
			}
		}
		return nil
	})
}
