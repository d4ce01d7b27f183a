package revocation

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the revocation service's Prometheus collectors.
type Metrics struct {
	Revocations   *prometheus.CounterVec // certificates revoked, by reason
	Presented     prometheus.Counter     // handshakes refused for a revoked certificate
	Disconnect    prometheus.Histogram   // request to last live connection closed, seconds
	CRLEntries    prometheus.Gauge
	CRLNumber     prometheus.Gauge
	CRLGeneration prometheus.Histogram
	InForce       prometheus.Gauge // size of the handshake set
}

// NewMetrics makes an unregistered set.
func NewMetrics() *Metrics {
	return &Metrics{
		Revocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trustamp_revocations_total", Help: "Certificates revoked, by RFC 5280 reason.",
		}, []string{"reason"}),
		Presented: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "trustamp_revoked_certificates_presented_total", Help: "Handshakes refused because they presented a revoked certificate.",
		}),
		Disconnect: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "trustamp_revocation_disconnect_seconds", Help: "From a revocation request to the last live connection using the certificate closed.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		CRLEntries: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "trustamp_crl_entries", Help: "Entries in the CRL being served.",
		}),
		CRLNumber: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "trustamp_crl_number", Help: "CRL number of the CRL being served.",
		}),
		CRLGeneration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "trustamp_crl_generation_seconds", Help: "Time to read, sign and store one CRL.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		InForce: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "trustamp_revoked_certificates", Help: "Unexpired revoked certificates refused at handshake.",
		}),
	}
}

// Register adds the collectors to r.
func (m *Metrics) Register(r prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.Revocations, m.Presented, m.Disconnect, m.CRLEntries, m.CRLNumber, m.CRLGeneration, m.InForce} {
		if err := r.Register(c); err != nil {
			return err
		}
	}
	return nil
}
