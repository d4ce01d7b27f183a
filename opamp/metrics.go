package opamp

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the OpAMP server's Prometheus collectors.
type Metrics struct {
	Connected *prometheus.GaugeVec   // by transport
	Messages  *prometheus.CounterVec // by direction (in, out)
	Rejected  *prometheus.CounterVec // by reason
	Issued    prometheus.Counter
	Rotations *prometheus.CounterVec // by event
	IssueTime prometheus.Histogram
}

// NewMetrics makes an unregistered set; Register adds it to a registry.
func NewMetrics() *Metrics {
	return &Metrics{
		Connected: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "trustamp_opamp_connected_agents", Help: "Live OpAMP connections on this replica, by transport.",
		}, []string{"transport"}),
		Messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trustamp_opamp_messages_total", Help: "OpAMP messages, by direction (in: AgentToServer, out: ServerToAgent).",
		}, []string{"direction"}),
		Rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trustamp_opamp_rejected_connections_total", Help: "Refused OpAMP connections and messages, by reason.",
		}, []string{"reason"}),
		Issued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "trustamp_certificates_issued_total", Help: "Agent certificates issued and offered.",
		}),
		Rotations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trustamp_rotations_total", Help: "Rotation events: requested, offered, confirmed, stalled, awaiting-agent-renewal.",
		}, []string{"event"}),
		IssueTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "trustamp_certificate_issue_seconds", Help: "Time to sign and record one agent certificate.",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 14),
		}),
	}
}

func (m *Metrics) observeIssue(d time.Duration) { m.IssueTime.Observe(d.Seconds()) }

// Register adds the collectors to r.
func (m *Metrics) Register(r prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.Connected, m.Messages, m.Rejected, m.Issued, m.Rotations, m.IssueTime} {
		if err := r.Register(c); err != nil {
			return err
		}
	}
	return nil
}
