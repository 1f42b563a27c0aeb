package builtin

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/devfleet/devfleet/controlplane/analyzer"
	"github.com/devfleet/devfleet/controlplane/apierror"
	"github.com/devfleet/devfleet/controlplane/state"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// expirySoon is how close an expiry must be for devserver-unreachable to warn about it.
const expirySoon = 24 * time.Hour

func devserverUnreachable() *analyzer.Analyzer {
	return &analyzer.Analyzer{
		Name:        DevserverUnreachable,
		Description: "Why a devserver may be unreachable or unusable: its host's health, a drain or a migration in flight, a loss and its repair, a stop, an expiry.",
		Inputs: []analyzer.Input{
			{Name: "devserver", Type: analyzer.String, Required: true, Description: "the devserver's name"},
		},
		Run: runDevserverUnreachable,
	}
}

func doctor() *analyzer.Analyzer {
	return &analyzer.Analyzer{
		Name:        Doctor,
		Description: "Explains a devserver's state to its developer in plain words, and what to do next (runs devserver-unreachable and what it chains).",
		Inputs: []analyzer.Input{
			{Name: "devserver", Type: analyzer.String, Required: true, Description: "the devserver's name"},
		},
		Run: func(ctx context.Context, env *analyzer.Env, in analyzer.Inputs) ([]*v1.Finding, error) {
			return env.Call(ctx, DevserverUnreachable, map[string]string{"devserver": in.String("devserver")})
		},
	}
}

func runDevserverUnreachable(ctx context.Context, env *analyzer.Env, in analyzer.Inputs) ([]*v1.Finding, error) {
	now := env.Now()
	v, err := env.State(ctx)
	if err != nil {
		return nil, err
	}
	name := in.String("devserver")
	subj := subject("devserver", name)
	d, err := v.GetDevserver(name)
	if err != nil {
		return gone(ctx, env, name)
	}
	ev := object("devserver", name, d.GetUpdateTime(), "state "+enumWord(d.GetState().String(), "DEVSERVER_STATE_"))
	var out []*v1.Finding
	add := func(f *v1.Finding) { out = append(out, withEvidence(f, ev)) }

	// Moving: a migration in flight, perhaps for a drain.
	if m := v.ActiveMigration(name); m != nil {
		f, chained, err := moving(ctx, env, v, d, m)
		if err != nil {
			return nil, err
		}
		add(f)
		out = append(out, chained...)
	}
	switch d.GetState() {
	case v1.DevserverState_DEVSERVER_STATE_LOST:
		f := finding(critical, subj, fmt.Sprintf("%s was lost %s: %s", name, at(now, d.GetUpdateTime()), d.GetStateReason()),
			"devfleet recreates a lost devserver on another host when its repair policy allows; its disk's content since the last copy may be gone")
		f.Actions = append(f.Actions, action("wait", name, "wait for the repair, then check again", "devfleet doctor "+name))
		add(f)
	case v1.DevserverState_DEVSERVER_STATE_STOPPED:
		f := finding(warning, subj, fmt.Sprintf("%s is stopped (%s, %s): it cannot be reached until it is started", name, d.GetStateReason(), at(now, d.GetUpdateTime())))
		f.Actions = append(f.Actions, action("start", name, "start it again on its host", "devfleet devserver start "+name))
		add(f)
	case v1.DevserverState_DEVSERVER_STATE_PROVISIONING:
		add(finding(info, subj, fmt.Sprintf("%s is being created on host %s (since %s)", name, d.GetHost(), at(now, d.GetCreateTime()))))
	}
	if d.GetState() != v1.DevserverState_DEVSERVER_STATE_MIGRATING && v.ActiveMigration(name) == nil {
		if f := queuedInDrain(now, v, d); f != nil {
			add(f)
		}
	}
	if d.GetHost() != "" {
		fs, err := hostTrouble(ctx, env, v, d)
		if err != nil {
			return nil, err
		}
		out = append(out, fs...)
	}
	if f, err := repaired(ctx, env, d); err != nil {
		return nil, err
	} else if f != nil {
		add(f)
	}
	if d.GetLifespan() == v1.Lifespan_LIFESPAN_TEMPORARY && d.GetExpireTime() != nil && d.GetExpireTime().AsTime().Sub(now) < expirySoon {
		f := finding(warning, subj, fmt.Sprintf("%s expires %s: it is deleted then", name, at(now, d.GetExpireTime())))
		f.Actions = append(f.Actions, action("extend", name, "push its expiry back", "devfleet devserver extend "+name+" --by 7d"))
		add(f)
	}
	if len(out) == 0 {
		h, _ := v.GetHost(d.GetHost())
		f := finding(info, subj, fmt.Sprintf("%s is running on host %s, which is healthy (%s); nothing devfleet knows of stands in the way", name, d.GetHost(), lastSeen(now, h)),
			"if you cannot reach it, the cause is likely between you and it: your network or VPN, or the guest itself (its ssh daemon, its firewall, a full disk)")
		f.Actions = append(f.Actions, action("check-connection", name, "check your connection, then collect evidence for the on-call", "devfleet doctor "+name+" --rage"))
		add(f)
	}
	return out, nil
}

// gone explains a devserver the state does not hold: deleted (when, why) or never known.
func gone(ctx context.Context, env *analyzer.Env, name string) ([]*v1.Finding, error) {
	evs, err := env.Events(ctx, analyzer.Query{Topics: []string{"devserver"}, Keys: []string{name}, Limit: 1})
	if err != nil {
		return nil, err
	}
	if len(evs) == 0 {
		return nil, apierror.Missing("devserver", name)
	}
	e := evs[0]
	m, err := e.GetObject().UnmarshalNew()
	if err != nil {
		return nil, err
	}
	d, _ := m.(*v1.Devserver)
	why := d.GetStateReason()
	if exp := d.GetExpireTime(); exp != nil && !exp.AsTime().After(e.GetTime().AsTime()) {
		why = "it expired " + at(env.Now(), exp)
	}
	f := finding(warning, subject("devserver", name), fmt.Sprintf("%s was deleted %s: %s", name, at(env.Now(), e.GetTime()), why))
	f.Evidence = append(f.Evidence, event(e, "its deletion"))
	f.Actions = append(f.Actions, action("create", name, "create a new devserver (its disk is gone)", "devfleet devserver create"))
	return []*v1.Finding{f}, nil
}

// moving explains a migration in flight: who moves it (a drain, its owner, an evacuation),
// how far it is, and what that means for reaching it; it chains migration-slow and, for a
// drain, drain-stuck.
func moving(ctx context.Context, env *analyzer.Env, v *analyzer.View, d *v1.Devserver, m *v1.Migration) (*v1.Finding, []*v1.Finding, error) {
	now := env.Now()
	name := d.GetName()
	dr := drainOf(v, name)
	by := "at your request"
	switch {
	case dr != nil && dr.GetEvacuation():
		by = fmt.Sprintf("by evacuation %s (its host stopped answering)", dr.GetId())
	case dr != nil:
		by = fmt.Sprintf("by drain %s (%s)", dr.GetId(), dr.GetReason())
	case m.GetReason() == v1.MigrationReason_MIGRATION_REASON_MAINTENANCE:
		by = "for maintenance"
	case m.GetReason() == v1.MigrationReason_MIGRATION_REASON_EVACUATION:
		by = "by an evacuation"
	case m.GetReason() == v1.MigrationReason_MIGRATION_REASON_REBALANCE:
		by = "to rebalance the fleet"
	}
	dest := m.GetDestHost()
	if dest == "" {
		dest = "a host not chosen yet"
	}
	f := finding(info, subject("devserver", name), fmt.Sprintf("%s is being migrated from %s to %s %s", name, m.GetSourceHost(), dest, by))
	phase := enumWord(m.GetPhase().String(), "MIGRATION_PHASE_")
	if m.GetCold() {
		step := enumWord(m.GetColdStep().String(), "COLD_STEP_")
		f.Details = append(f.Details, fmt.Sprintf("a cold move (%s, %s): it is shut down, its disk is copied and it starts on the new host, so it is unreachable until it is up there; its disk and its files come along", phase, step))
	} else {
		f.Details = append(f.Details, fmt.Sprintf("a live move (%s): it keeps running and stays reachable; at the switch it pauses for well under a second, and open connections survive", phase))
	}
	if p := m.GetProgress(); p != nil && p.GetMemoryTotalBytes() > 0 {
		pct := 100 * float64(p.GetMemoryProcessedBytes()) / float64(p.GetMemoryTotalBytes())
		f.Details = append(f.Details, fmt.Sprintf("%.0f%% of its memory copied (%s of %s)", min(pct, 100), mib(p.GetMemoryProcessedBytes()), mib(p.GetMemoryTotalBytes())))
	}
	if m.GetAttempts() > 1 {
		f.Severity = warning
		f.Details = append(f.Details, fmt.Sprintf("attempt %d; the last one failed: %s", m.GetAttempts(), m.GetFailureReason()))
	}
	f.Evidence = append(f.Evidence, object("migration", m.GetId(), m.GetUpdateTime(), phase))
	f.Actions = append(f.Actions, action("wait", m.GetId(), "nothing to do: follow the move", "devfleet migration show "+m.GetId()))
	if dr != nil {
		f.Evidence = append(f.Evidence, object("drain", dr.GetId(), dr.GetUpdateTime(), dr.GetReason()))
		if dl := dr.GetDeadline(); dl != nil {
			f.Details = append(f.Details, fmt.Sprintf("the drain must finish by %s", at(now, dl)))
		}
	}
	if m.GetReason() == v1.MigrationReason_MIGRATION_REASON_USER {
		f.Actions = append(f.Actions, action("abort-migration", m.GetId(), "abort the move; it stays where it runs", "devfleet migration abort "+m.GetId()))
	}
	var chained []*v1.Finding
	fs, err := env.Call(ctx, MigrationSlow, map[string]string{"migration": m.GetId()})
	if err != nil {
		return nil, nil, err
	}
	chained = append(chained, serious(fs)...)
	if dr != nil && !dr.GetEvacuation() {
		fs, err := env.Call(ctx, DrainStuck, map[string]string{"drain": dr.GetId()})
		if err != nil {
			return nil, nil, err
		}
		chained = append(chained, serious(fs)...)
	}
	return f, chained, nil
}

// drainOf returns the running drain that holds an item for the devserver, or nil.
func drainOf(v *analyzer.View, devserver string) *v1.Drain {
	for _, dr := range v.Drains() {
		if state.DrainFinal(dr.GetState()) {
			continue
		}
		for _, it := range v.DrainItems(dr.GetId()) {
			if it.GetDevserver() == devserver {
				return dr
			}
		}
	}
	return nil
}

// queuedInDrain explains a devserver waiting in a drain for its move.
func queuedInDrain(now time.Time, v *analyzer.View, d *v1.Devserver) *v1.Finding {
	dr := drainOf(v, d.GetName())
	if dr == nil {
		return nil
	}
	var item *v1.DrainItem
	for _, it := range v.DrainItems(dr.GetId()) {
		if it.GetDevserver() == d.GetName() {
			item = it
		}
	}
	subj := subject("devserver", d.GetName())
	switch item.GetState() {
	case v1.DrainItemState_DRAIN_ITEM_STATE_PENDING:
		f := finding(info, subj, fmt.Sprintf("host %s is being drained by drain %s (%s): %s waits for its move", d.GetHost(), dr.GetId(), dr.GetReason(), d.GetName()))
		if item.GetDestHost() != "" {
			f.Details = append(f.Details, fmt.Sprintf("planned: to %s, wave %d, about %s", item.GetDestHost(), item.GetWave(), short(item.GetExpected().AsDuration())))
		}
		if item.GetBlocker() != "" {
			f.Severity = warning
			f.Details = append(f.Details, "held: "+item.GetBlocker())
		}
		if dl := dr.GetDeadline(); dl != nil {
			f.Details = append(f.Details, fmt.Sprintf("the drain must finish by %s", at(now, dl)))
		}
		f.Evidence = append(f.Evidence, object("drain", dr.GetId(), dr.GetUpdateTime(), dr.GetReason()))
		return f
	case v1.DrainItemState_DRAIN_ITEM_STATE_BLOCKED, v1.DrainItemState_DRAIN_ITEM_STATE_STRANDED:
		f := finding(warning, subj, fmt.Sprintf("drain %s of host %s cannot move %s: %s", dr.GetId(), d.GetHost(), d.GetName(), item.GetBlocker()))
		f.Evidence = append(f.Evidence, object("drain", dr.GetId(), dr.GetUpdateTime(), dr.GetReason()))
		f.Actions = append(f.Actions, action("contact-operators", dr.GetId(), "ask the operators of the drain what happens to it; the drain's deadline action decides", "devfleet drain status "+dr.GetId()))
		return f
	}
	return nil
}

// hostTrouble explains a host that is unhealthy, fenced, or being taken out of service, and
// chains host-flapping for an unhealthy one.
func hostTrouble(ctx context.Context, env *analyzer.Env, v *analyzer.View, d *v1.Devserver) ([]*v1.Finding, error) {
	now := env.Now()
	h, err := v.GetHost(d.GetHost())
	if err != nil {
		return nil, nil
	}
	subj := subject("devserver", d.GetName())
	var out []*v1.Finding
	if h.GetHealth() == v1.HostHealth_HOST_HEALTH_UNHEALTHY {
		f := finding(critical, subj, fmt.Sprintf("its host %s is unreachable (%s): %s", h.GetName(), lastSeen(now, h), h.GetHealthReason()))
		if h.GetFencedTime() != nil {
			f.Details = append(f.Details, fmt.Sprintf("the host was fenced %s: %s will be recreated on another host", at(now, h.GetFencedTime()), d.GetName()))
		} else {
			f.Details = append(f.Details, "if it does not answer again soon, devfleet fences it and recreates its devservers on other hosts")
		}
		f.Evidence = append(f.Evidence, object("host", h.GetName(), h.GetUpdateTime(), "unhealthy"))
		f.Actions = append(f.Actions, action("wait", h.GetName(), "wait: devfleet handles a dead host; check again in a few minutes", "devfleet doctor "+d.GetName()))
		out = append(out, f)
		fs, err := env.Call(ctx, HostFlapping, map[string]string{"host": h.GetName()})
		if err != nil {
			return nil, err
		}
		out = append(out, serious(fs)...)
	}
	if dc := v.DecomOn(h.GetName()); dc != nil {
		f := finding(info, subj, fmt.Sprintf("its host %s is being decommissioned (%s): %s will be moved off it first", h.GetName(), dc.GetReason(), d.GetName()))
		f.Evidence = append(f.Evidence, object("decom", dc.GetId(), nil, dc.GetReason()))
		out = append(out, f)
	}
	return out, nil
}

// repaired says when a devserver was lost and recreated recently (from its events: a loss, then
// running again on another host).
func repaired(ctx context.Context, env *analyzer.Env, d *v1.Devserver) (*v1.Finding, error) {
	if d.GetRepairs() == 0 {
		return nil, nil
	}
	since := windowStart(env, 7*24*time.Hour)
	evs, err := env.Events(ctx, analyzer.Query{Topics: []string{"devserver"}, Keys: []string{d.GetName()}, Since: since})
	if err != nil {
		return nil, err
	}
	var lostAt *v1.Event
	var lostHost string
	for _, e := range evs {
		m, err := e.GetObject().UnmarshalNew()
		if err != nil {
			return nil, err
		}
		x, _ := m.(*v1.Devserver)
		if x.GetState() == v1.DevserverState_DEVSERVER_STATE_LOST {
			lostAt, lostHost = e, x.GetHost()
		}
	}
	now := env.Now()
	f := finding(info, subject("devserver", d.GetName()), fmt.Sprintf("%s has been recreated %d time(s) after a loss", d.GetName(), d.GetRepairs()))
	if lostAt != nil {
		f.Summary = fmt.Sprintf("%s was lost on host %s %s and recreated on %s", d.GetName(), lostHost, at(now, lostAt.GetTime()), d.GetHost())
		f.Details = append(f.Details, "a recreated devserver starts from its disk as the repair found it; work not saved to disk then is gone")
		f.Evidence = append(f.Evidence, event(lostAt, "its loss"))
	}
	if strings.TrimSpace(d.GetStateReason()) != "" {
		f.Details = append(f.Details, "now: "+d.GetStateReason())
	}
	return f, nil
}
