package raftnode

import (
	"strconv"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics exposes raft's state and the latency of writes through it.
type Metrics struct {
	node      atomic.Pointer[raft.Raft]
	commit    prometheus.Histogram
	batchSize prometheus.Histogram
}

// NewMetrics registers raft metrics with reg. Gauges read the node at scrape time.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "devfleet_raft_commit_seconds",
			Help:    "Time from proposing a command on the leader to its result: queueing, replication to a quorum and apply.",
			Buckets: prometheus.ExponentialBuckets(250e-6, 2, 14),
		}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "devfleet_raft_proposal_batch_commands",
			Help:    "Commands grouped into one raft log entry by the leader (group commit).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11),
		}),
	}
	stat := func(key string) func() float64 {
		return func() float64 {
			r := m.node.Load()
			if r == nil {
				return 0
			}
			v, _ := strconv.ParseFloat(r.Stats()[key], 64)
			return v
		}
	}
	reg.MustRegister(m.commit, m.batchSize,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "devfleet_raft_term", Help: "Current raft term."}, stat("term")),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "devfleet_raft_commit_index", Help: "Highest raft index known committed."}, stat("commit_index")),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "devfleet_raft_applied_index", Help: "Highest raft index applied by raft."}, stat("applied_index")),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "devfleet_raft_last_snapshot_index", Help: "Raft index of the latest snapshot."}, stat("last_snapshot_index")),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "devfleet_raft_peers", Help: "Voters in the latest configuration."}, stat("num_peers")),
	)
	reg.MustRegister(&stateCollector{m: m, desc: prometheus.NewDesc("devfleet_raft_state",
		"1 for this node's current raft state (Follower, Candidate, Leader, Shutdown), 0 for the others.",
		[]string{"state"}, nil)})
	return m
}

func (m *Metrics) watch(r *raft.Raft) {
	if m != nil {
		m.node.Store(r)
	}
}

func (m *Metrics) observeCommit(d time.Duration) {
	if m != nil {
		m.commit.Observe(d.Seconds())
	}
}

func (m *Metrics) observeBatch(n int) {
	if m != nil {
		m.batchSize.Observe(float64(n))
	}
}

// stateCollector reports the raft state as one gauge per possible state.
type stateCollector struct {
	m    *Metrics
	desc *prometheus.Desc
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	cur := raft.Shutdown
	if r := c.m.node.Load(); r != nil {
		cur = r.State()
	}
	for _, s := range []raft.RaftState{raft.Follower, raft.Candidate, raft.Leader, raft.Shutdown} {
		v := 0.0
		if s == cur {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, v, s.String())
	}
}
