package eventlog

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are optional: a nil *metrics records nothing.
type metrics struct {
	appendedTotal prometheus.Counter
	appendSeconds prometheus.Histogram
	deletedTotal  *prometheus.CounterVec
	slowTotal     prometheus.Counter
	subscribers   prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, l *Log) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &metrics{
		appendedTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "devfleet_eventlog_appended_events_total", Help: "Events appended to this node's event log.",
		}),
		appendSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "devfleet_eventlog_append_seconds",
			Help:    "Time to append one raft batch's events, fsync included: it delays the FSM's apply.",
			Buckets: prometheus.ExponentialBuckets(100e-6, 2, 14),
		}),
		deletedTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "devfleet_eventlog_deleted_events_total", Help: "Events deleted, by reason: age, size, or missing (older than history declared missing: a snapshot restore or a failed append).",
		}, []string{"reason"}),
		slowTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "devfleet_eventlog_slow_consumers_total", Help: "Subscriptions cut off because their consumer fell more than its buffer behind.",
		}),
		subscribers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "devfleet_eventlog_subscribers", Help: "Subscriptions running.",
		}),
	}
	read := func(f func() float64) func() float64 {
		return func() float64 {
			l.mu.Lock()
			defer l.mu.Unlock()
			return f()
		}
	}
	for _, c := range []prometheus.Collector{
		m.appendedTotal, m.appendSeconds, m.deletedTotal, m.slowTotal, m.subscribers,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "devfleet_eventlog_bytes", Help: "Sum of the stored events' encoded sizes (bounded by MaxBytes)."},
			read(func() float64 { return float64(l.st.bytes) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "devfleet_eventlog_last_index", Help: "Raft index of the newest stored event."},
			read(func() float64 { return float64(l.st.last.Index) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "devfleet_eventlog_oldest_index", Help: "Raft index of the oldest retained event (0: none)."},
			read(func() float64 { return float64(l.oldest.Index) })),
	} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("event log metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) appended(n int, d time.Duration) {
	if m != nil {
		m.appendedTotal.Add(float64(n))
		m.appendSeconds.Observe(d.Seconds())
	}
}

func (m *metrics) deleted(reasons map[string]int) {
	if m != nil {
		for r, n := range reasons {
			m.deletedTotal.WithLabelValues(r).Add(float64(n))
		}
	}
}

func (m *metrics) slowConsumer() {
	if m != nil {
		m.slowTotal.Inc()
	}
}

func (m *metrics) subscribed(d int) {
	if m != nil {
		m.subscribers.Add(float64(d))
	}
}
