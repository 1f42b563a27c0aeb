package builtin

import (
	"context"
	"fmt"
	"time"

	"github.com/devfleet/devfleet/controlplane/analyzer"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// pageSize is the guest page size the dirty rate counts in.
const pageSize = 4096

// Thresholds of migration-slow.
const (
	// dirtyShare: a guest dirtying memory at this share of the link's rate or more is unlikely
	// to converge by itself.
	dirtyShare = 0.8
	// slowPasses: this many passes over memory without switching is a migration not
	// converging.
	slowPasses = 5
)

func migrationSlow() *analyzer.Analyzer {
	return &analyzer.Analyzer{
		Name:        MigrationSlow,
		Description: "Why a migration is slow or failing: the guest's dirty rate against the link's rate, passes, attempts and failures; suggests auto-converge, post-copy, a higher bandwidth or an abort.",
		Inputs: []analyzer.Input{
			{Name: "migration", Type: analyzer.String, Required: true, Description: "the migration's ID"},
		},
		Run: func(ctx context.Context, env *analyzer.Env, in analyzer.Inputs) ([]*v1.Finding, error) {
			v, err := env.State(ctx)
			if err != nil {
				return nil, err
			}
			m, err := v.GetMigration(in.String("migration"))
			if err != nil {
				return nil, err
			}
			return explainMigration(env.Now(), m), nil
		},
	}
}

func explainMigration(now time.Time, m *v1.Migration) []*v1.Finding {
	id, subj := m.GetId(), subject("migration", m.GetId())
	ev := object("migration", id, m.GetUpdateTime(), "")
	p, pol := m.GetProgress(), m.GetPolicy()
	abort := action("abort-migration", id, "abort the move; the devserver stays where it runs", "devfleet migration abort "+id)
	var out []*v1.Finding
	switch m.GetPhase() {
	case v1.MigrationPhase_MIGRATION_PHASE_SUCCEEDED:
		return []*v1.Finding{withEvidence(finding(info, subj, fmt.Sprintf("migration %s of %s succeeded %s after %d attempt(s)", id, m.GetDevserver(), at(now, m.GetEndTime()), max(m.GetAttempts(), 1))), ev)}
	case v1.MigrationPhase_MIGRATION_PHASE_FAILED, v1.MigrationPhase_MIGRATION_PHASE_ABORTED:
		return []*v1.Finding{withEvidence(finding(warning, subj, fmt.Sprintf("migration %s of %s ended %s %s: %s", id, m.GetDevserver(), enumWord(m.GetPhase().String(), "MIGRATION_PHASE_"), at(now, m.GetEndTime()), m.GetFailureReason())), ev)}
	}
	if m.GetAttempts() > 1 && m.GetFailureReason() != "" {
		f := finding(warning, subj, fmt.Sprintf("migration %s of %s is on attempt %d; the last one failed: %s", id, m.GetDevserver(), m.GetAttempts(), m.GetFailureReason()))
		if n := pol.GetMaxAttempts(); n > 0 {
			f.Details = append(f.Details, fmt.Sprintf("it gives up after %d attempt(s)", n))
		}
		f.Actions = append(f.Actions, action("check-host", m.GetDestHost(), "look at the destination host's libvirt: repeated failures often come from it", "devfleet host show "+m.GetDestHost()))
		if !m.GetCold() && !pol.GetColdFallback() {
			f.Actions = append(f.Actions, action("cold-fallback", id, "move it cold instead (a short outage: shut down, copy the disk, start)", "devfleet devserver migrate "+m.GetDevserver()+" --cold"))
		}
		out = append(out, withEvidence(f, ev))
	}
	if m.GetPhase() != v1.MigrationPhase_MIGRATION_PHASE_RUNNING || p == nil || m.GetCold() {
		if len(out) == 0 {
			what := enumWord(m.GetPhase().String(), "MIGRATION_PHASE_")
			if m.GetCold() && m.GetColdStep() != v1.ColdStep_COLD_STEP_UNSPECIFIED {
				what += ", " + enumWord(m.GetColdStep().String(), "COLD_STEP_")
			}
			out = append(out, withEvidence(finding(info, subj, fmt.Sprintf("migration %s of %s from %s to %s is %s", id, m.GetDevserver(), m.GetSourceHost(), m.GetDestHost(), what)), ev))
		}
		return out
	}
	rate := float64(p.GetDataRateBytesPerSecond())
	dirty := float64(p.GetDirtyRatePagesPerSecond()) * pageSize
	remaining := p.GetMemoryRemainingBytes()
	details := []string{
		fmt.Sprintf("copied %s of %s, %s left, pass %d", mib(p.GetMemoryProcessedBytes()), mib(p.GetMemoryTotalBytes()), mib(remaining), p.GetIteration()),
		fmt.Sprintf("the link carries %s/s; the guest dirties %s/s", mib(uint64(rate)), mib(uint64(dirty))),
	}
	if pol.GetBandwidthMibps() > 0 {
		details = append(details, fmt.Sprintf("bandwidth capped at %d MiB/s by its policy", pol.GetBandwidthMibps()))
	}
	converging := rate > 0 && dirty < dirtyShare*rate && p.GetIteration() < slowPasses
	if converging {
		eta := "unknown"
		if rate > 0 {
			eta = short(time.Duration(float64(remaining) / rate * float64(time.Second)))
		}
		out = append(out, withEvidence(finding(info, subj, fmt.Sprintf("migration %s of %s is converging: %s left at %s/s, about %s to go", id, m.GetDevserver(), mib(remaining), mib(uint64(rate)), eta), details...), ev))
		return out
	}
	f := withEvidence(finding(warning, subj, fmt.Sprintf("migration %s of %s is not converging: the guest dirties memory about as fast as the link copies it", id, m.GetDevserver()), details...), ev)
	if p.GetPostCopy() {
		f.Summary = fmt.Sprintf("migration %s of %s has switched to post-copy: it finishes as the destination pulls the remaining pages", id, m.GetDevserver())
		f.Severity = info
		return append(out, f)
	}
	if !pol.GetAutoConverge() {
		f.Actions = append(f.Actions, action("enable-auto-converge", id, "throttle the guest's vCPUs until the copy catches up (auto-converge)", ""))
	}
	if !pol.GetAllowPostCopy() {
		f.Actions = append(f.Actions, action("enable-post-copy", id, "switch to post-copy: the guest runs on the destination at once and pulls its pages (the risk: a network failure meanwhile loses the guest)", "devfleet devserver migrate "+m.GetDevserver()+" --to-host "+m.GetDestHost()+" --post-copy"))
	}
	if pol.GetBandwidthMibps() > 0 && float64(pol.GetBandwidthMibps())*(1<<20) < dirty/dirtyShare {
		f.Actions = append(f.Actions, action("raise-bandwidth", id, fmt.Sprintf("the cap of %d MiB/s is below what the guest dirties; a higher cap lets it converge", pol.GetBandwidthMibps()), ""))
	}
	f.Actions = append(f.Actions, action("abort-migration", id, abort.GetDescription(), abort.GetCommand()))
	return append(out, f)
}

func withEvidence(f *v1.Finding, evs ...*v1.Evidence) *v1.Finding {
	f.Evidence = append(f.Evidence, evs...)
	return f
}
