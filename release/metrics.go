package release

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the rollout counters, by package type and version.
type Metrics struct {
	Offers   *prometheus.CounterVec // new offers recorded
	Installs *prometheus.CounterVec // agents reporting the offered version installed
	Failures *prometheus.CounterVec // agents reporting a failed install
	Halts    *prometheus.CounterVec // rollouts halted on their failure rate
}

// NewMetrics makes an unregistered set.
func NewMetrics() *Metrics {
	vec := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{"type", "version"})
	}
	return &Metrics{
		Offers:   vec("trustamp_package_offers_total", "Packages offered to agents (a changed target), by release."),
		Installs: vec("trustamp_package_installs_total", "Agents that reported an offered release installed."),
		Failures: vec("trustamp_package_install_failures_total", "Agents that reported an offered release failed to install."),
		Halts:    vec("trustamp_rollout_halts_total", "Rollouts halted because too many installs failed."),
	}
}

// Register adds the collectors to r.
func (m *Metrics) Register(r prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.Offers, m.Installs, m.Failures, m.Halts} {
		if err := r.Register(c); err != nil {
			return err
		}
	}
	return nil
}
