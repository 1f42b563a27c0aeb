package notify

import (
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	delivered *prometheus.CounterVec
	retried   *prometheus.CounterVec
	dead      *prometheus.CounterVec
	dropped   *prometheus.CounterVec
	depth     *prometheus.GaugeVec
	seconds   *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer, sinks []Sink) *metrics {
	counter := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{"sink"})
	}
	m := &metrics{
		delivered: counter("devfleet_notify_delivered_total", "Messages a sink accepted."),
		retried:   counter("devfleet_notify_retries_total", "Failed delivery attempts that were retried."),
		dead:      counter("devfleet_notify_dead_letters_total", "Messages given up on: refused by the sink or out of attempts."),
		dropped:   counter("devfleet_notify_dropped_total", "Messages dropped unsent because the sink's queue was full (the oldest go first)."),
		depth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "devfleet_notify_queue_depth",
			Help: "Messages waiting for a sink, not counting the one being delivered.",
		}, []string{"sink"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "devfleet_notify_delivery_seconds",
			Help:    "Time one delivery attempt took (the sink's call, whatever its outcome).",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
		}, []string{"sink"}),
	}
	// Every sink's series exist from the start, so that rate() and alerts see a zero before
	// the first failure rather than nothing.
	for _, s := range sinks {
		n := s.Name()
		m.delivered.WithLabelValues(n)
		m.retried.WithLabelValues(n)
		m.dead.WithLabelValues(n)
		m.dropped.WithLabelValues(n)
		m.depth.WithLabelValues(n)
	}
	if reg != nil {
		reg.MustRegister(m.delivered, m.retried, m.dead, m.dropped, m.depth, m.seconds)
	}
	return m
}
