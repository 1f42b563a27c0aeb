package provisioner

import (
	"context"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/devfleet/devfleet/controlplane/hypervisor"
	"github.com/devfleet/devfleet/controlplane/state"
	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// Health reporting: the leader's connections know each host's reachability; the state learns it
// in batches, at most every healthEvery, and a reachable host's last-seen time only when it is
// lastSeenEvery stale, so that pings never cost a raft write each.
const (
	healthEvery   = time.Second
	lastSeenEvery = 30 * time.Second
)

// reportHealth records host health until ctx ends.
func (r *run) reportHealth(ctx context.Context) {
	t := time.NewTicker(healthEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		reports := healthReports(r.c.cfg.Store.View(), r.c.cfg.Hypervisors.Healths())
		if len(reports) == 0 {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, r.c.cfg.CallTimeout)
		_, err := r.propose(cctx, &fsmv1.Command{Op: &fsmv1.Command_ReportHostHealth{ReportHostHealth: &fsmv1.ReportHostHealth{Reports: reports}}})
		cancel()
		if err != nil && ctx.Err() == nil {
			r.c.log.Warn("recording host health failed", "error", err)
		}
	}
}

// healthReports compares what the connections know with the state and returns what changed.
func healthReports(v *state.View, known []hypervisor.Health) []*fsmv1.HostHealthReport {
	var out []*fsmv1.HostHealthReport
	for _, hl := range known {
		h, err := v.GetHost(hl.Host)
		if err != nil || h.GetLibvirtUri() != hl.URI || hl.Since.IsZero() {
			continue // not (or no longer) this host, or its first attempt still runs
		}
		rep := &fsmv1.HostHealthReport{Host: hl.Host, Health: v1.HostHealth_HOST_HEALTH_HEALTHY}
		if !hl.Reachable {
			rep.Health = v1.HostHealth_HOST_HEALTH_UNHEALTHY
			if hl.Err != nil {
				rep.Reason = truncate(hl.Err.Error())
			}
		}
		if !hl.LastSeen.IsZero() {
			rep.LastSeenTime = timestamppb.New(hl.LastSeen)
		}
		stale := !hl.LastSeen.IsZero() && (h.GetLastSeenTime() == nil || hl.LastSeen.Sub(h.GetLastSeenTime().AsTime()) >= lastSeenEvery)
		if rep.Health != h.GetHealth() || rep.Reason != h.GetHealthReason() || stale {
			out = append(out, rep)
		}
	}
	return out
}
