package provisioner

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	steps   *prometheus.CounterVec
	seconds *prometheus.HistogramVec
	libvirt *prometheus.HistogramVec
	orphans *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		steps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "devfleet_provisioner_steps_total",
			Help: "Provisioner steps (create, delete, stop, start, repair, check, reap) by outcome.",
		}, []string{"step", "outcome"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "devfleet_provisioner_step_seconds",
			Help:    "Time one provisioner step took, libvirt calls and raft writes included.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}, []string{"step"}),
		libvirt: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    LibvirtSecondsMetric,
			Help:    "Time the hypervisor took to define and start a guest, alone (what a create costs outside the control plane).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}, []string{"kind"}),
		orphans: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "devfleet_provisioner_orphan_domains",
			Help: "Domains that carry devfleet metadata but match no devserver of their host (leader only).",
		}, []string{"host"}),
	}
	if reg != nil {
		reg.MustRegister(m.steps, m.seconds, m.libvirt, m.orphans)
	}
	return m
}

// LibvirtSecondsMetric names the histogram of define-and-start times, which benchmarks read to
// split a create's time between the control plane and libvirt.
const LibvirtSecondsMetric = "devfleet_provisioner_define_start_seconds"

func (m *metrics) observe(step string, err error, took time.Duration) {
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	m.steps.WithLabelValues(step, outcome).Inc()
	m.seconds.WithLabelValues(step).Observe(took.Seconds())
}
