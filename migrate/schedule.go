// Package migrate moves devservers between hosts: it schedules recorded migrations under
// per-host, per-site and cluster-wide limits in priority order, runs them through libvirt live
// migration, follows their progress, and records how they end.
package migrate

import (
	"cmp"
	"slices"
	"time"

	"github.com/devfleet/devfleet/controlplane/state"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// Limits bound how many migrations run at once. Zero fields take the defaults.
type Limits struct {
	// PerSource: migrations leaving one host (default 2).
	PerSource int
	// PerDest: migrations arriving at one host (default 2).
	PerDest int
	// PerSite: migrations leaving or arriving at one site (default 4).
	PerSite int
	// Cluster: migrations in the whole fleet (default 5, as KubeVirt's parallelMigrationsPerCluster).
	Cluster int
}

// Default limits.
const (
	DefaultPerSource = 2
	DefaultPerDest   = 2
	DefaultPerSite   = 4
	DefaultCluster   = 5
)

func (l Limits) withDefaults() Limits {
	l.PerSource = cmp.Or(l.PerSource, DefaultPerSource)
	l.PerDest = cmp.Or(l.PerDest, DefaultPerDest)
	l.PerSite = cmp.Or(l.PerSite, DefaultPerSite)
	l.Cluster = cmp.Or(l.Cluster, DefaultCluster)
	return l
}

// running reports whether a migration holds a slot: it was given one and has not ended.
func running(m *v1.Migration) bool {
	return m.GetPhase() != v1.MigrationPhase_MIGRATION_PHASE_PENDING && !state.Final(m.GetPhase())
}

// Schedule picks the pending migrations to start now, in order, so that no limit is exceeded:
// higher priority first; within a priority, the groups (requested_by: a drain, a user) take
// turns, oldest first within a group, so that one big drain cannot starve another. siteOf
// gives a host's site ("" if unknown). A migration whose not_before is after now waits.
func Schedule(all []*v1.Migration, l Limits, siteOf func(host string) string, now time.Time) []*v1.Migration {
	l = l.withDefaults()
	src, dst, site := map[string]int{}, map[string]int{}, map[string]int{}
	total := 0
	var pending []*v1.Migration
	for _, m := range all {
		switch {
		case running(m):
			src[m.GetSourceHost()]++
			dst[m.GetDestHost()]++
			site[siteOf(m.GetSourceHost())]++
			if s := siteOf(m.GetDestHost()); s != siteOf(m.GetSourceHost()) {
				site[s]++
			}
			total++
		case m.GetPhase() == v1.MigrationPhase_MIGRATION_PHASE_PENDING && !m.GetAbortRequested() && !waits(m, now):
			pending = append(pending, m)
		}
	}
	var out []*v1.Migration
	for _, m := range fairOrder(pending) {
		if total >= l.Cluster {
			break
		}
		s, d := siteOf(m.GetSourceHost()), siteOf(m.GetDestHost())
		if src[m.GetSourceHost()] >= l.PerSource || dst[m.GetDestHost()] >= l.PerDest || site[s] >= l.PerSite || (d != s && site[d] >= l.PerSite) {
			continue
		}
		src[m.GetSourceHost()]++
		dst[m.GetDestHost()]++
		site[s]++
		if d != s {
			site[d]++
		}
		total++
		out = append(out, m)
	}
	return out
}

// waits reports whether a pending migration is asked to start later than now.
func waits(m *v1.Migration, now time.Time) bool {
	return m.GetNotBefore() != nil && m.GetNotBefore().AsTime().After(now)
}

// nextStart is the earliest not_before after now of the pending migrations (zero when none
// waits): when the scheduler must look again by itself.
func nextStart(all []*v1.Migration, now time.Time) time.Time {
	var next time.Time
	for _, m := range all {
		if m.GetPhase() == v1.MigrationPhase_MIGRATION_PHASE_PENDING && waits(m, now) {
			if t := m.GetNotBefore().AsTime(); next.IsZero() || t.Before(next) {
				next = t
			}
		}
	}
	return next
}

// fairOrder sorts pending migrations by priority (high first), and within a priority lets the
// requesters take turns (round-robin, the requester with the oldest migration first), oldest
// first within a requester.
func fairOrder(pending []*v1.Migration) []*v1.Migration {
	byAge := slices.Clone(pending)
	slices.SortStableFunc(byAge, func(a, b *v1.Migration) int {
		return cmp.Or(cmp.Compare(b.GetPriority(), a.GetPriority()), cmp.Compare(a.GetCreateIndex(), b.GetCreateIndex()), cmp.Compare(a.GetId(), b.GetId()))
	})
	var out []*v1.Migration
	for i := 0; i < len(byAge); {
		j := i
		for j < len(byAge) && byAge[j].GetPriority() == byAge[i].GetPriority() {
			j++
		}
		// One priority band: queue per requester, in order of each one's oldest.
		var order []string
		queues := map[string][]*v1.Migration{}
		for _, m := range byAge[i:j] {
			g := m.GetRequestedBy()
			if _, ok := queues[g]; !ok {
				order = append(order, g)
			}
			queues[g] = append(queues[g], m)
		}
		for left := j - i; left > 0; {
			for _, g := range order {
				if q := queues[g]; len(q) > 0 {
					out = append(out, q[0])
					queues[g] = q[1:]
					left--
				}
			}
		}
		i = j
	}
	return out
}
