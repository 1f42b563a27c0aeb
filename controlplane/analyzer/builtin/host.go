package builtin

import (
	"context"
	"fmt"
	"time"

	"github.com/devfleet/devfleet/controlplane/analyzer"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

func hostFlapping() *analyzer.Analyzer {
	return &analyzer.Analyzer{
		Name:        HostFlapping,
		Description: "Whether a host's health keeps changing, how often, and whether its site's other hosts change with it (a site-wide cause: network, power) or not (the host itself).",
		Inputs: []analyzer.Input{
			{Name: "host", Type: analyzer.String, Required: true, Description: "the host's name"},
			{Name: "window", Type: analyzer.Duration, Default: "1h", Description: "how far back to count health changes"},
			{Name: "changes", Type: analyzer.Int, Default: "3", Description: "this many health changes in the window is flapping"},
		},
		Run: runHostFlapping,
	}
}

// healthChanges counts the health changes of hosts over a window, from their health at its
// start; unhealthy says whether each was unhealthy at any point in it.
func healthChanges(ctx context.Context, env *analyzer.Env, hosts []string, since time.Time) (changes map[string]int, unhealthy map[string]bool, last map[string]*v1.Event, err error) {
	then, err := env.StateAt(ctx, since)
	if err != nil {
		return nil, nil, nil, err
	}
	cur := map[string]v1.HostHealth{}
	changes, unhealthy, last = map[string]int{}, map[string]bool{}, map[string]*v1.Event{}
	for _, h := range hosts {
		if x, err := then.GetHost(h); err == nil {
			cur[h] = x.GetHealth()
			unhealthy[h] = x.GetHealth() == v1.HostHealth_HOST_HEALTH_UNHEALTHY
		}
	}
	evs, err := env.Events(ctx, analyzer.Query{Topics: []string{"host"}, Keys: hosts, Since: since})
	if err != nil {
		return nil, nil, nil, err
	}
	for _, e := range evs {
		m, err := e.GetObject().UnmarshalNew()
		if err != nil {
			return nil, nil, nil, err
		}
		h, ok := m.(*v1.Host)
		if !ok {
			continue
		}
		name := h.GetName()
		if prev, seen := cur[name]; seen && prev != h.GetHealth() && h.GetHealth() != v1.HostHealth_HOST_HEALTH_UNKNOWN {
			changes[name]++
			last[name] = e
		}
		if h.GetHealth() != v1.HostHealth_HOST_HEALTH_UNKNOWN {
			cur[name] = h.GetHealth()
		}
		if h.GetHealth() == v1.HostHealth_HOST_HEALTH_UNHEALTHY {
			unhealthy[name] = true
		}
	}
	return changes, unhealthy, last, nil
}

func runHostFlapping(ctx context.Context, env *analyzer.Env, in analyzer.Inputs) ([]*v1.Finding, error) {
	now := env.Now()
	v, err := env.State(ctx)
	if err != nil {
		return nil, err
	}
	name := in.String("host")
	h, err := v.GetHost(name)
	if err != nil {
		return nil, err
	}
	window, threshold := in.Duration("window"), int(in.Int("changes"))
	since := windowStart(env, window)
	var peers []string
	for _, p := range v.HostsAt(h.GetSite()) {
		if p.GetName() != name && p.GetState() != v1.HostState_HOST_STATE_RETIRED {
			peers = append(peers, p.GetName())
		}
	}
	changes, unhealthy, last, err := healthChanges(ctx, env, append([]string{name}, peers...), since)
	if err != nil {
		return nil, err
	}
	subj := subject("host", name)
	n := changes[name]
	down := h.GetHealth() == v1.HostHealth_HOST_HEALTH_UNHEALTHY
	troubled := 0
	for _, p := range peers {
		if changes[p] > 0 || unhealthy[p] {
			troubled++
		}
	}
	siteWide := len(peers) > 0 && troubled*2 >= len(peers)
	peerLine := fmt.Sprintf("%d of its %d site peer(s) in %s changed health or were unhealthy in the same window", troubled, len(peers), h.GetSite())
	ev := object("host", name, h.GetUpdateTime(), "health "+enumWord(h.GetHealth().String(), "HOST_HEALTH_"))
	if e := last[name]; e != nil {
		ev = event(e, "its last health change")
	}
	var f *v1.Finding
	switch {
	case n >= threshold:
		f = finding(warning, subj, fmt.Sprintf("host %s is flapping: its health changed %d times in %s (about every %s)", name, n, short(now.Sub(since)), short(now.Sub(since)/time.Duration(n))), peerLine)
	case down:
		f = finding(critical, subj, fmt.Sprintf("host %s is unreachable, %s: %s", name, lastSeen(now, h), h.GetHealthReason()), peerLine)
		if h.GetFencedTime() != nil {
			f.Details = append(f.Details, fmt.Sprintf("it was fenced %s: its devservers are recreated on other hosts, and its leftover guests are powered off when it answers again", at(now, h.GetFencedTime())))
		}
	default:
		return []*v1.Finding{withEvidence(finding(info, subj, fmt.Sprintf("host %s is steady: %d health change(s) in %s, now %s", name, n, short(now.Sub(since)), enumWord(h.GetHealth().String(), "HOST_HEALTH_")), peerLine), ev)}, nil
	}
	f.Evidence = append(f.Evidence, ev)
	if siteWide {
		f.Severity = critical
		f.Details = append(f.Details, fmt.Sprintf("a cause shared by site %s (its network, its power, or the control plane's link to it) is more likely than host %s itself; automatic evacuation brakes in that case", h.GetSite(), name))
		f.Actions = append(f.Actions, action("check-site", h.GetSite(), "check the site's network and power before touching hosts", ""))
		for _, p := range peers {
			if e := last[p]; e != nil {
				f.Evidence = append(f.Evidence, event(e, "a site peer's health change"))
			}
		}
	} else {
		f.Details = append(f.Details, fmt.Sprintf("its site peers are steady: the cause is likely host %s itself (hardware, libvirtd, its network link)", name))
		f.Actions = append(f.Actions, action("drain-host", name, "move its devservers off while it is looked at", "devfleet drain start "+name+" --reason 'flapping host'"))
	}
	return []*v1.Finding{f}, nil
}

// lastSeen says when devfleet last heard from a host, for a sentence.
func lastSeen(now time.Time, h *v1.Host) string {
	t := h.GetLastSeenTime()
	if t == nil {
		return "never heard from"
	}
	if d := now.Sub(t.AsTime()); d >= 0 {
		return "last heard from " + short(d) + " ago"
	}
	return "last heard from " + at(now, t)
}
