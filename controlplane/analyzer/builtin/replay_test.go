package builtin

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/devfleet/devfleet/controlplane/analyzer"
	"github.com/devfleet/devfleet/controlplane/apierror"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

func recording(t *testing.T, name string) *analyzer.Recording {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rec, err := analyzer.ReadRecording(f)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return rec
}

func run(t *testing.T, rec *analyzer.Recording, name string, in map[string]string) *v1.AnalysisReport {
	t.Helper()
	r, err := Registry().Run(context.Background(), rec, name, in)
	if err != nil {
		t.Fatalf("%s%v: %v", name, in, err)
	}
	return r
}

// want fails unless a finding of the severity holds every part in its summary or details.
func want(t *testing.T, fs []*v1.Finding, sev v1.Severity, parts ...string) *v1.Finding {
	t.Helper()
	for _, f := range fs {
		text := f.GetSummary() + "\n" + strings.Join(f.GetDetails(), "\n")
		ok := f.GetSeverity() == sev
		for _, p := range parts {
			ok = ok && strings.Contains(text, p)
		}
		if ok {
			return f
		}
	}
	var got []string
	for _, f := range fs {
		got = append(got, f.GetSeverity().String()+": "+f.GetSummary()+" | "+strings.Join(f.GetDetails(), " | "))
	}
	t.Fatalf("no %s finding with %q among:\n%s", sev, parts, strings.Join(got, "\n"))
	return nil
}

func TestReplayDyingHost(t *testing.T) {
	t.Parallel()
	rec := recording(t, "dying-host.rec")
	r := run(t, rec, HostFlapping, map[string]string{"host": "m1"})
	f := want(t, r.GetFindings(), warning, "host m1 is flapping", "changed 5 times", "0 of its 2 site peer(s)", "site peers are steady")
	if f.GetActions()[0].GetKind() != "drain-host" || len(f.GetEvidence()) == 0 || f.GetEvidence()[0].GetIndex() == 0 {
		t.Errorf("actions %v, evidence %v: want drain-host and the last health change's event", f.GetActions(), f.GetEvidence())
	}
	want(t, run(t, rec, HostFlapping, map[string]string{"host": "m2"}).GetFindings(), info, "host m2 is steady")
	// A threshold above what happened: not flapping, but unreachable.
	want(t, run(t, rec, HostFlapping, map[string]string{"host": "m1", "changes": "9"}).GetFindings(), critical, "host m1 is unreachable, last heard from ")

	doc := run(t, rec, Doctor, map[string]string{"devserver": "d1"})
	want(t, doc.GetFindings(), critical, "its host m1 is unreachable", "if it does not answer again soon, devfleet fences it")
	want(t, doc.GetFindings(), warning, "host m1 is flapping")
	wantChain := []string{"doctor(devserver=d1)", "doctor(devserver=d1) > devserver-unreachable(devserver=d1)",
		"doctor(devserver=d1) > devserver-unreachable(devserver=d1) > host-flapping(changes=3,host=m1,window=1h)"}
	if !slices.Equal(doc.GetChain(), wantChain) {
		t.Errorf("chain %q, want %q", doc.GetChain(), wantChain)
	}
	for _, f := range doc.GetFindings() {
		if f.GetAnalyzer() == "" {
			t.Errorf("finding %q names no analyzer", f.GetSummary())
		}
	}
}

func TestReplayStuckDrain(t *testing.T) {
	t.Parallel()
	rec := recording(t, "stuck-drain.rec")
	v, err := rec.StateAt(context.Background(), rec.Now())
	if err != nil {
		t.Fatal(err)
	}
	drains := v.Drains()
	if len(drains) != 1 {
		t.Fatalf("the recording holds %d drains, want 1", len(drains))
	}
	id := drains[0].GetId()
	r := run(t, rec, DrainStuck, map[string]string{"drain": id, "stall": "3s"})
	want(t, r.GetFindings(), warning, "drain "+id+" has made no progress", "0 of 2 done, 2 moving")
	for _, d := range []string{"d1", "d2"} {
		f := want(t, r.GetFindings(), warning, "the move of "+d+" from m1 to m2 has copied nothing", "attempt 2")
		if f.GetActions()[0].GetKind() != "abort-migration" || f.GetActions()[1].GetTarget() != "m2" {
			t.Errorf("actions for %s: %v", d, f.GetActions())
		}
	}
	f := want(t, r.GetFindings(), warning, "destination m2 failed 2 moves", "hugepages")
	if a := f.GetActions()[0]; a.GetKind() != "cordon-host" || a.GetTarget() != "m2" {
		t.Errorf("the failing destination's action: %v", a)
	}
	// With the default stall (10m) the drain is too young to call stuck.
	want(t, run(t, rec, DrainStuck, map[string]string{"drain": id}).GetFindings(), info, "drain "+id+" is progressing")

	doc := run(t, rec, Doctor, map[string]string{"devserver": "d1"})
	f = want(t, doc.GetFindings(), warning, "d1 is being migrated from m1 to m2 by drain "+id+" (firmware update)", "a live move", "attempt 2")
	var drainEvidence bool
	var migration string
	for _, e := range f.GetEvidence() {
		drainEvidence = drainEvidence || (e.GetTopic() == "drain" && e.GetKey() == id)
		if e.GetTopic() == "migration" {
			migration = e.GetKey()
		}
	}
	if !drainEvidence {
		t.Errorf("the finding does not give the drain as evidence: %v", f.GetEvidence())
	}
	if !slices.ContainsFunc(doc.GetChain(), func(c string) bool { return strings.HasSuffix(c, "> drain-stuck(drain="+id+",stall=10m0s)") }) {
		t.Errorf("doctor did not chain drain-stuck: %q", doc.GetChain())
	}
	m := want(t, run(t, rec, MigrationSlow, map[string]string{"migration": migration}).GetFindings(), warning, "is on attempt 2", "hugepages")
	if m.GetActions()[0].GetTarget() != "m2" {
		t.Errorf("migration-slow's actions: %v", m.GetActions())
	}
}

func TestReplayBrokenN1(t *testing.T) {
	t.Parallel()
	rec := recording(t, "broken-n1.rec")
	r := run(t, rec, CapacityRisk, nil)
	f := want(t, r.GetFindings(), critical, "N-1 is broken: if region eu were lost, 3 of its 3 devservers would have no home (small ×3)",
		"by this change: host u1 went cordoned (rack power work)")
	if a := f.GetActions()[0]; a.GetKind() != "add-capacity" || a.GetTarget() != "eu/small" {
		t.Errorf("actions: %v", f.GetActions())
	}
	if len(f.GetEvidence()) != 1 || f.GetEvidence()[0].GetTopic() != "host" || f.GetEvidence()[0].GetKey() != "u1" {
		t.Errorf("evidence: %v, want the cordon of u1", f.GetEvidence())
	}
	// Before the cordon (its event's time, less a moment) N-1 held: the recording's past is
	// there to look at, not only its end.
	v, err := rec.StateAt(context.Background(), f.GetEvidence()[0].GetTime().AsTime().Add(-1))
	if err != nil {
		t.Fatal(err)
	}
	if h, err := v.GetHost("u1"); err != nil || h.GetState() != v1.HostState_HOST_STATE_ACTIVE {
		t.Errorf("u1 just before the cordon: %v, %v", h.GetState(), err)
	}
	want(t, run(t, rec, CapacityRisk, map[string]string{"region": "us"}).GetFindings(), info, "N-1 holds: the fleet can lose region us")
}

// TestBadInputs: a missing, unknown or mistyped input is InvalidArgument naming it; an unknown
// object is NotFound.
func TestBadInputs(t *testing.T) {
	t.Parallel()
	rec := recording(t, "dying-host.rec")
	for _, tc := range []struct {
		name  string
		in    map[string]string
		kind  apierror.Kind
		field string
	}{
		{DrainStuck, nil, apierror.InvalidArgument, "inputs.drain"},
		{DrainStuck, map[string]string{"drain": "x", "stall": "soon"}, apierror.InvalidArgument, "inputs.stall"},
		{HostFlapping, map[string]string{"host": "m1", "changes": "three"}, apierror.InvalidArgument, "inputs.changes"},
		{HostFlapping, map[string]string{"host": "m1", "colour": "red"}, apierror.InvalidArgument, "inputs.colour"},
		{HostFlapping, map[string]string{"host": "m9"}, apierror.NotFound, ""},
		{Doctor, map[string]string{"devserver": "nope"}, apierror.NotFound, ""},
		{"no-such-analyzer", nil, apierror.NotFound, ""},
	} {
		_, err := Registry().Run(context.Background(), rec, tc.name, tc.in)
		if apierror.KindOf(err) != tc.kind || (tc.field != "" && !strings.Contains(err.Error(), tc.field)) {
			t.Errorf("%s %v: %v, want kind %v naming %q", tc.name, tc.in, err, tc.kind, tc.field)
		}
	}
}
