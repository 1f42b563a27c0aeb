package controlplane_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/devfleet/devfleet/controlplane"
	"github.com/devfleet/devfleet/controlplane/analyzer"
	"github.com/devfleet/devfleet/controlplane/analyzer/builtin"
	"github.com/devfleet/devfleet/controlplane/api"
	"github.com/devfleet/devfleet/controlplane/clustertest"
	"github.com/devfleet/devfleet/controlplane/hypervisor"
	"github.com/devfleet/devfleet/notify"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// The scenarios below play incidents on a real control plane (in-memory hosts), check what the
// analyzers and the alerts make of them live, record the feed through the API, and check that
// the recording replays to the same findings. With -update-recordings they also write the
// recordings that the analyzers' replay tests read (controlplane/analyzer/builtin/testdata).
var updateRecordings = flag.Bool("update-recordings", false, "write the scenarios' recordings to analyzer/builtin/testdata")

// scenarioAlerts: alerts on, fast, for the scenarios.
var scenarioAlerts = &controlplane.AlertOptions{Interval: 200 * time.Millisecond, DrainStall: 3 * time.Second, HostUnreachable: time.Second}

type scenario struct {
	t     *testing.T
	c     *clustertest.Cluster
	ctx   context.Context
	start time.Time
	fleet v1.FleetServiceClient
	// hook receives the leader's notifications (alerts among them).
	hook *notify.Recorder
}

func newScenario(t *testing.T) *scenario {
	hook := notify.NewRecorder("hook")
	c := clustertest.New(t, 1, clustertest.Options{Operators: []string{"ops"}, Alerts: scenarioAlerts, NotifySinks: []notify.Sink{hook}})
	s := &scenario{t: t, c: c, ctx: ctxT(t, 120*time.Second), start: time.Now().Add(-time.Second), fleet: c.Nodes[0].Fleet(), hook: hook}
	return s
}

// notified waits for an alert's notification ("opened" or "closed"), and returns its text.
func (s *scenario) notified(a *v1.Alert, what string) string {
	s.t.Helper()
	var text string
	s.waitFor("alert."+what+" of "+a.GetId()+" delivered", func() error {
		for _, m := range s.hook.Messages() {
			if m.ID == "alert/"+a.GetId()+"/"+what && m.Kind == "alert."+what && m.Subject == a.GetSubject() {
				text = m.Text
				return nil
			}
		}
		return errors.New("not yet")
	})
	return text
}

func (s *scenario) must(_ any, err error) {
	s.t.Helper()
	if err != nil {
		s.t.Fatal(err)
	}
}

func (s *scenario) ops() context.Context {
	return metadata.AppendToOutgoingContext(s.ctx, api.AsHeader, "ops")
}

func (s *scenario) region(name string, sites ...string) {
	s.t.Helper()
	seedRegion(s.t, s.ctx, s.fleet, name, sites...)
}

func (s *scenario) hosts(site string, names ...string) {
	s.t.Helper()
	seedFakeHosts(s.t, s.ctx, s.fleet, site, names...)
}

func (s *scenario) devserver(name, region, host string) {
	s.t.Helper()
	s.must(s.fleet.CreateDevserver(s.ctx, &v1.CreateDevserverRequest{Devserver: &v1.Devserver{Name: name, Owner: "alice", Flavor: "small",
		Region: region, Host: host, Lifespan: v1.Lifespan_LIFESPAN_PERMANENT}}))
	s.waitFor(name+" running", func() error {
		d, err := s.fleet.GetDevserver(s.ctx, &v1.GetDevserverRequest{Name: name})
		if err != nil || d.GetState() != v1.DevserverState_DEVSERVER_STATE_RUNNING {
			return errors.New("not yet")
		}
		return nil
	})
}

func (s *scenario) fake(host string) *hypervisor.Memory {
	s.t.Helper()
	m, err := s.c.Nodes[0].Server.Hypervisors().Fake("fake://" + host)
	if err != nil {
		s.t.Fatal(err)
	}
	return m
}

func (s *scenario) waitFor(what string, cond func() error) {
	s.t.Helper()
	clustertest.WaitFor(s.t, 60*time.Second, what, cond)
}

func (s *scenario) hostHealth(name string, want v1.HostHealth) {
	s.t.Helper()
	s.waitFor(name+" "+want.String(), func() error {
		h, err := s.fleet.GetHost(s.ctx, &v1.GetHostRequest{Name: name})
		if err != nil || h.GetHealth() != want {
			return errors.New("not yet")
		}
		return nil
	})
}

// run runs an analyzer live, through the API.
func (s *scenario) run(name string, inputs map[string]string) []*v1.Finding {
	s.t.Helper()
	r, err := v1.NewAnalyzerServiceClient(s.c.Nodes[0].Conn()).RunAnalyzer(s.ctx, &v1.RunAnalyzerRequest{Name: name, Inputs: inputs})
	if err != nil {
		s.t.Fatalf("run %s: %v", name, err)
	}
	return r.GetFindings()
}

// alert waits for an alert of a condition on a subject with findings, and returns it.
func (s *scenario) alert(condition, subject string) *v1.Alert {
	s.t.Helper()
	var found *v1.Alert
	s.waitFor("alert "+condition+" on "+subject+" with findings", func() error {
		resp, err := v1.NewAlertServiceClient(s.c.Nodes[0].Conn()).ListAlerts(s.ctx, &v1.ListAlertsRequest{})
		if err != nil {
			return err
		}
		for _, a := range resp.GetAlerts() {
			if a.GetCondition() == condition && a.GetSubject() == subject && (len(a.GetFindings()) > 0 || a.GetAnalysisError() != "") {
				found = a
				return nil
			}
		}
		return errors.New("not yet")
	})
	if found.GetAnalysisError() != "" {
		s.t.Fatalf("alert %s: analysis failed: %s", found.GetId(), found.GetAnalysisError())
	}
	return found
}

// record records the feed since the scenario started through the API, checks it reads back, and
// with -update-recordings writes it to the analyzers' testdata.
func (s *scenario) record(file string) *analyzer.Recording {
	s.t.Helper()
	stream, err := v1.NewAnalyzerServiceClient(s.c.Nodes[0].Conn()).Record(s.ctx, &v1.RecordRequest{Since: timestamppb.New(s.start)})
	if err != nil {
		s.t.Fatal(err)
	}
	var buf bytes.Buffer
	w := analyzer.NewWriter(&buf)
	for {
		chunk, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			s.t.Fatal(err)
		}
		if err := w.Put(chunk); err != nil {
			s.t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		s.t.Fatal(err)
	}
	rec, err := analyzer.ReadRecording(bytes.NewReader(buf.Bytes()))
	if err != nil {
		s.t.Fatalf("the recording does not read back: %v", err)
	}
	if *updateRecordings {
		path := filepath.Join("analyzer", "builtin", "testdata", file)
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			s.t.Fatal(err)
		}
		s.t.Logf("wrote %s (%d bytes, %d events)", path, buf.Len(), len(rec.Segment))
	}
	return rec
}

// replay runs an analyzer on a recording.
func replay(t *testing.T, rec *analyzer.Recording, name string, inputs map[string]string) []*v1.Finding {
	t.Helper()
	r, err := builtin.Registry().Run(context.Background(), rec, name, inputs)
	if err != nil {
		t.Fatalf("replay %s: %v", name, err)
	}
	return r.GetFindings()
}

// wantFinding fails unless a finding of the severity has a summary or detail holding every part.
func wantFinding(t *testing.T, fs []*v1.Finding, sev v1.Severity, parts ...string) *v1.Finding {
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

// TestScenarioDyingHost: a host's libvirt drops three times, then for good. host-flapping calls
// it flapping and isolated (its site peers are steady), doctor tells its devserver's owner the
// host is unreachable, the leader opens a host-unreachable alert with those findings and closes
// it when the host comes back; the recording replays to the same findings.
func TestScenarioDyingHost(t *testing.T) {
	t.Parallel()
	s := newScenario(t)
	s.region("eu", "eu-1")
	s.hosts("eu-1", "m1", "m2", "m3")
	s.must(s.fleet.CreateFlavor(s.ctx, &v1.CreateFlavorRequest{Flavor: &v1.Flavor{Name: "small", Resources: &v1.Resources{Vcpus: 2, MemoryMib: 2048}}}))
	s.devserver("d1", "eu", "m1")
	m1 := s.fake("m1")
	s.hostHealth("m1", v1.HostHealth_HOST_HEALTH_HEALTHY)
	for range 2 {
		m1.DropConnection()
		s.hostHealth("m1", v1.HostHealth_HOST_HEALTH_UNHEALTHY)
		m1.RestoreConnection()
		s.hostHealth("m1", v1.HostHealth_HOST_HEALTH_HEALTHY)
	}
	m1.DropConnection()
	s.hostHealth("m1", v1.HostHealth_HOST_HEALTH_UNHEALTHY)

	check := func(t *testing.T, run func(string, map[string]string) []*v1.Finding) {
		flap := run(builtin.HostFlapping, map[string]string{"host": "m1"})
		f := wantFinding(t, flap, v1.Severity_SEVERITY_WARNING, "host m1 is flapping", "changed 5 times", "site peers are steady")
		if len(f.GetActions()) == 0 || f.GetActions()[0].GetKind() != "drain-host" {
			t.Errorf("an isolated flapping host should suggest draining it: %v", f.GetActions())
		}
		doc := run(builtin.Doctor, map[string]string{"devserver": "d1"})
		wantFinding(t, doc, v1.Severity_SEVERITY_CRITICAL, "its host m1 is unreachable")
		wantFinding(t, doc, v1.Severity_SEVERITY_WARNING, "host m1 is flapping")
		steady := run(builtin.HostFlapping, map[string]string{"host": "m2"})
		wantFinding(t, steady, v1.Severity_SEVERITY_INFO, "host m2 is steady")
	}
	check(t, s.run)
	a := s.alert("host-unreachable", "host/m1")
	wantFinding(t, a.GetFindings(), v1.Severity_SEVERITY_WARNING, "host m1 is flapping")
	rec := s.record("dying-host.rec")
	check(t, func(name string, in map[string]string) []*v1.Finding { return replay(t, rec, name, in) })

	if text := s.notified(a, "opened"); !strings.Contains(text, "host m1 is flapping") {
		t.Errorf("the alert's notification does not carry its findings:\n%s", text)
	}

	m1.RestoreConnection()
	s.hostHealth("m1", v1.HostHealth_HOST_HEALTH_HEALTHY)
	s.waitFor("the alert closed", func() error {
		got, err := v1.NewAlertServiceClient(s.c.Nodes[0].Conn()).GetAlert(s.ctx, &v1.GetAlertRequest{Id: a.GetId()})
		if err != nil || got.GetState() != v1.AlertState_ALERT_STATE_CLOSED {
			return errors.New("still open")
		}
		return nil
	})
	s.notified(a, "closed")
	// The history is written just after the state: wait for it.
	s.waitFor("the alert's events on the feed (open, findings, close)", func() error {
		evs, err := v1.NewEventServiceClient(s.c.Nodes[0].Conn()).ListKeyEvents(s.ctx, &v1.ListKeyEventsRequest{Topic: "alert", Key: a.GetId()})
		if err != nil {
			return err
		}
		if n := len(evs.GetEvents()); n != 3 {
			return fmt.Errorf("%d events", n)
		}
		return nil
	})
}

// TestScenarioStuckDrain: a drain whose only destination fails each move's first attempt and
// then hangs. The drain makes no progress: drain-stuck names the hung moves and the failing
// destination and suggests aborting and cordoning; doctor tells an owner their devserver is
// being migrated by that drain, which is stuck; the leader opens a drain-stalled alert.
func TestScenarioStuckDrain(t *testing.T) {
	t.Parallel()
	s := newScenario(t)
	s.region("eu", "eu-1")
	s.hosts("eu-1", "m1", "m2")
	s.must(s.fleet.CreateFlavor(s.ctx, &v1.CreateFlavorRequest{Flavor: &v1.Flavor{Name: "small", Resources: &v1.Resources{Vcpus: 2, MemoryMib: 2048}}}))
	s.devserver("d1", "eu", "m1")
	s.devserver("d2", "eu", "m1")
	m2 := s.fake("m2")
	for range 2 {
		m2.FailNext(hypervisor.OpMigrateIncoming, errors.New("qemu: unable to allocate hugepages on the destination"))
	}
	for range 10 {
		m2.HangNext(hypervisor.OpMigrateIncoming)
	}
	drains := v1.NewDrainServiceClient(s.c.Nodes[0].Conn())
	resp, err := drains.StartDrain(s.ops(), &v1.StartDrainRequest{Hosts: []string{"m1"}, Reason: "firmware update"})
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetDrain().GetId()
	migrations := v1.NewMigrationServiceClient(s.c.Nodes[0].Conn())
	s.waitFor("both moves hung on their second attempt", func() error {
		ms, err := migrations.ListMigrations(s.ctx, &v1.ListMigrationsRequest{Active: true})
		if err != nil {
			return err
		}
		n := 0
		for _, m := range ms.GetMigrations() {
			if m.GetAttempts() == 2 && m.GetPhase() == v1.MigrationPhase_MIGRATION_PHASE_RUNNING {
				n++
			}
		}
		if n != 2 {
			return errors.New("not yet")
		}
		return nil
	})
	time.Sleep(3500 * time.Millisecond) // the stall: no progress for 3s
	check := func(t *testing.T, run func(string, map[string]string) []*v1.Finding) {
		fs := run(builtin.DrainStuck, map[string]string{"drain": id, "stall": "3s"})
		wantFinding(t, fs, v1.Severity_SEVERITY_WARNING, "drain "+id+" has made no progress", "0 of 2 done, 2 moving")
		f := wantFinding(t, fs, v1.Severity_SEVERITY_WARNING, "the move of d1 from m1 to m2 has copied nothing", "attempt 2")
		if f.GetActions()[0].GetKind() != "abort-migration" {
			t.Errorf("a hung move's actions: %v", f.GetActions())
		}
		f = wantFinding(t, fs, v1.Severity_SEVERITY_WARNING, "destination m2 failed 2 moves", "hugepages")
		if f.GetActions()[0].GetCommand() != "devfleet host cordon m2 --reason 'failing migrations'" {
			t.Errorf("the failing destination's action: %v", f.GetActions())
		}
		doc := run(builtin.Doctor, map[string]string{"devserver": "d1"})
		wantFinding(t, doc, v1.Severity_SEVERITY_WARNING, "d1 is being migrated from m1 to m2 by drain "+id+" (firmware update)", "a live move", "attempt 2")
	}
	check(t, s.run)
	a := s.alert("drain-stalled", "drain/"+id)
	wantFinding(t, a.GetFindings(), v1.Severity_SEVERITY_WARNING, "destination m2 failed")
	rec := s.record("stuck-drain.rec")
	check(t, func(name string, in map[string]string) []*v1.Finding { return replay(t, rec, name, in) })
}

// TestScenarioBrokenN1: two regions; eu's devservers fit in us until us's only host is cordoned.
// capacity-risk says N-1 is broken for eu, for which flavor, and names the cordon as the change
// that broke it; the leader opens a capacity alert and closes it at the uncordon.
func TestScenarioBrokenN1(t *testing.T) {
	t.Parallel()
	s := newScenario(t)
	s.region("eu", "eu-1")
	s.region("us", "us-1")
	s.hosts("eu-1", "e1")
	s.hosts("us-1", "u1")
	s.must(s.fleet.CreateFlavor(s.ctx, &v1.CreateFlavorRequest{Flavor: &v1.Flavor{Name: "small", Resources: &v1.Resources{Vcpus: 2, MemoryMib: 2048}}}))
	for _, d := range []string{"d1", "d2", "d3"} {
		s.devserver(d, "eu", "e1")
	}
	ok := s.run(builtin.CapacityRisk, nil)
	wantFinding(t, ok, v1.Severity_SEVERITY_INFO, "N-1 holds")
	time.Sleep(time.Second) // the cordon comes strictly after the fleet was fine
	s.must(s.fleet.CordonHost(s.ctx, &v1.CordonHostRequest{Name: "u1", Reason: "rack power work"}))
	check := func(t *testing.T, run func(string, map[string]string) []*v1.Finding) {
		fs := run(builtin.CapacityRisk, map[string]string{"region": "eu"})
		f := wantFinding(t, fs, v1.Severity_SEVERITY_CRITICAL, "N-1 is broken: if region eu were lost, 3 of its 3 devservers would have no home (small ×3)",
			"by this change: host u1 went cordoned (rack power work)")
		if f.GetActions()[0].GetKind() != "add-capacity" || f.GetActions()[0].GetTarget() != "eu/small" {
			t.Errorf("actions: %v", f.GetActions())
		}
	}
	check(t, s.run)
	a := s.alert("capacity-n1-broken", "region/eu")
	wantFinding(t, a.GetFindings(), v1.Severity_SEVERITY_CRITICAL, "host u1 went cordoned")
	rec := s.record("broken-n1.rec")
	check(t, func(name string, in map[string]string) []*v1.Finding { return replay(t, rec, name, in) })

	s.must(s.fleet.UncordonHost(s.ctx, &v1.UncordonHostRequest{Name: "u1"}))
	s.waitFor("the capacity alert closed", func() error {
		got, err := v1.NewAlertServiceClient(s.c.Nodes[0].Conn()).GetAlert(s.ctx, &v1.GetAlertRequest{Id: a.GetId()})
		if err != nil || got.GetState() != v1.AlertState_ALERT_STATE_CLOSED {
			return errors.New("still open")
		}
		return nil
	})
}
