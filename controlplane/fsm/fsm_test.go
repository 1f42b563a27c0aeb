package fsm

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/devfleet/devfleet/controlplane/apierror"
	"github.com/devfleet/devfleet/controlplane/state"
	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

var epoch = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

type harness struct {
	t     *testing.T
	fsm   *FSM
	index uint64
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	return &harness{t: t, fsm: New(state.New(), slog.New(slog.DiscardHandler), nil)}
}

// apply applies cmd through raft's entry point, as one batch, and returns its result.
func (h *harness) apply(cmd *fsmv1.Command) Result {
	h.t.Helper()
	h.index++
	cmd.TimeUnixNano = epoch.Add(time.Duration(h.index) * time.Second).UnixNano()
	data, err := EncodeBatch([]*fsmv1.Command{cmd})
	if err != nil {
		h.t.Fatal(err)
	}
	res := h.fsm.Apply(&raft.Log{Index: h.index, Type: raft.LogCommand, Data: data}).([]Result)
	if len(res) != 1 {
		h.t.Fatalf("got %d results for one command", len(res))
	}
	return res[0]
}

func (h *harness) ok(cmd *fsmv1.Command) any {
	h.t.Helper()
	r := h.apply(cmd)
	if r.Err != nil {
		h.t.Fatalf("%s: unexpected error: %v", TypeName(cmd), r.Err)
	}
	return r.Value
}

// persisted returns the snapshot bytes of the current state: equal bytes mean equal state.
func (h *harness) persisted() []byte {
	h.t.Helper()
	var buf bytes.Buffer
	if err := h.fsm.Store().View().Persist(&buf); err != nil {
		h.t.Fatal(err)
	}
	return buf.Bytes()
}

func res(cpus, mem, disk, gpus int64) *v1.Resources {
	return &v1.Resources{Vcpus: cpus, MemoryMib: mem, DiskGib: disk, Gpus: gpus}
}

func cRegion(name string) *fsmv1.Command {
	return &fsmv1.Command{Op: &fsmv1.Command_CreateRegion{CreateRegion: &fsmv1.CreateRegion{Region: &v1.Region{Name: name}}}}
}

func cSite(name, region string) *fsmv1.Command {
	return &fsmv1.Command{Op: &fsmv1.Command_CreateSite{CreateSite: &fsmv1.CreateSite{Site: &v1.Site{Name: name, Region: region}}}}
}

func cHost(name, site string) *fsmv1.Command {
	return &fsmv1.Command{Op: &fsmv1.Command_CreateHost{CreateHost: &fsmv1.CreateHost{Host: &v1.Host{
		Name: name, Site: site, Capacity: res(64, 262144, 2000, 0), Labels: map[string]string{"rack": "r1"},
	}}}}
}

func cFlavor(name string, cpus, mem int64) *fsmv1.Command {
	return &fsmv1.Command{Op: &fsmv1.Command_CreateFlavor{CreateFlavor: &fsmv1.CreateFlavor{Flavor: &v1.Flavor{
		Name: name, Resources: res(cpus, mem, 100, 0),
	}}}}
}

func cDevserver(name, owner, flavor, region, host, id string) *fsmv1.Command {
	return &fsmv1.Command{Op: &fsmv1.Command_CreateDevserver{CreateDevserver: &fsmv1.CreateDevserver{Devserver: &v1.Devserver{
		Name: name, Id: id, Owner: owner, Flavor: flavor, Region: region, Host: host,
		Lifespan: v1.Lifespan_LIFESPAN_PERMANENT,
	}}}}
}

func deleteCmd(kind, name string) *fsmv1.Command {
	switch kind {
	case "region":
		return &fsmv1.Command{Op: &fsmv1.Command_DeleteRegion{DeleteRegion: &fsmv1.DeleteRegion{Name: name}}}
	case "site":
		return &fsmv1.Command{Op: &fsmv1.Command_DeleteSite{DeleteSite: &fsmv1.DeleteSite{Name: name}}}
	case "host":
		return &fsmv1.Command{Op: &fsmv1.Command_DeleteHost{DeleteHost: &fsmv1.DeleteHost{Name: name}}}
	case "flavor":
		return &fsmv1.Command{Op: &fsmv1.Command_DeleteFlavor{DeleteFlavor: &fsmv1.DeleteFlavor{Name: name}}}
	case "devserver":
		return &fsmv1.Command{Op: &fsmv1.Command_DeleteDevserver{DeleteDevserver: &fsmv1.DeleteDevserver{Name: name}}}
	}
	panic(kind)
}

func cordon(name, reason string) *fsmv1.Command {
	return &fsmv1.Command{Op: &fsmv1.Command_CordonHost{CordonHost: &fsmv1.CordonHost{Name: name, Reason: reason}}}
}

func uncordon(name string) *fsmv1.Command {
	return &fsmv1.Command{Op: &fsmv1.Command_UncordonHost{UncordonHost: &fsmv1.UncordonHost{Name: name}}}
}

func mask(paths ...string) *fieldmaskpb.FieldMask { return &fieldmaskpb.FieldMask{Paths: paths} }

// seed builds a small fleet: region eu with site eu-1 and host h1, flavor small, devserver d1.
func seed(h *harness) {
	h.ok(cRegion("eu"))
	h.ok(cRegion("us"))
	h.ok(cSite("eu-1", "eu"))
	h.ok(cSite("us-1", "us"))
	h.ok(cHost("h1", "eu-1"))
	h.ok(cHost("h2", "us-1"))
	h.ok(cFlavor("small", 4, 8192))
	h.ok(cDevserver("d1", "alice", "small", "eu", "h1", "id-1"))
}

func TestCommandsAccepted(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	seed(h)

	host := h.ok(cHost("h3", "eu-1")).(*v1.Host)
	if host.GetRegion() != "eu" || host.GetState() != v1.HostState_HOST_STATE_ACTIVE {
		t.Fatalf("host region/state = %q/%v, want eu/active", host.GetRegion(), host.GetState())
	}
	if host.GetOvercommit().GetCpu() != 1 || host.GetCreateIndex() != h.index {
		t.Fatalf("host defaults not stamped: %v", host)
	}
	if got := host.GetCreateTime().AsTime(); !got.Equal(epoch.Add(time.Duration(h.index) * time.Second)) {
		t.Fatalf("create_time = %v, want the command's time", got)
	}

	upd := h.ok(&fsmv1.Command{Op: &fsmv1.Command_UpdateHost{UpdateHost: &fsmv1.UpdateHost{
		Host:       &v1.Host{Name: "h3", Capacity: res(128, 524288, 4000, 2), Labels: map[string]string{"gpu": "a100"}},
		UpdateMask: mask("capacity"),
	}}}).(*v1.Host)
	if upd.GetCapacity().GetVcpus() != 128 || upd.GetLabels()["rack"] != "r1" {
		t.Fatalf("update applied outside its mask or not at all: %v", upd)
	}

	c := h.ok(cordon("h3", "disk swap")).(*v1.Host)
	if c.GetState() != v1.HostState_HOST_STATE_CORDONED || c.GetStateReason() != "disk swap" {
		t.Fatalf("cordon: %v", c)
	}
	c = h.ok(cordon("h3", "disk swap, day 2")).(*v1.Host)
	if c.GetStateReason() != "disk swap, day 2" {
		t.Fatalf("re-cordon should update the reason: %v", c)
	}
	u := h.ok(uncordon("h3")).(*v1.Host)
	if u.GetState() != v1.HostState_HOST_STATE_ACTIVE || u.GetStateReason() != "" {
		t.Fatalf("uncordon: %v", u)
	}
	h.ok(uncordon("h3")) // idempotent

	r := h.ok(&fsmv1.Command{Op: &fsmv1.Command_UpdateRegion{UpdateRegion: &fsmv1.UpdateRegion{
		Region: &v1.Region{Name: "eu", Description: "Europe"}, UpdateMask: mask("description"),
	}}}).(*v1.Region)
	if r.GetDescription() != "Europe" || r.GetModifyIndex() != h.index || r.GetCreateIndex() == h.index {
		t.Fatalf("region update: %v", r)
	}
	s := h.ok(&fsmv1.Command{Op: &fsmv1.Command_UpdateSite{UpdateSite: &fsmv1.UpdateSite{
		Site: &v1.Site{Name: "eu-1", Description: "Frankfurt"},
	}}}).(*v1.Site)
	if s.GetDescription() != "Frankfurt" {
		t.Fatalf("site update: %v", s)
	}
	f := h.ok(&fsmv1.Command{Op: &fsmv1.Command_UpdateFlavor{UpdateFlavor: &fsmv1.UpdateFlavor{
		Flavor: &v1.Flavor{Name: "small", Description: "4 vCPU"},
	}}}).(*v1.Flavor)
	if f.GetDescription() != "4 vCPU" || f.GetKind() != v1.FlavorKind_FLAVOR_KIND_VM {
		t.Fatalf("flavor update: %v", f)
	}
	h.ok(cFlavor("empty", 2, 2048))
	f = h.ok(&fsmv1.Command{Op: &fsmv1.Command_UpdateFlavor{UpdateFlavor: &fsmv1.UpdateFlavor{
		Flavor: &v1.Flavor{Name: "empty", Resources: res(8, 16384, 100, 0)}, UpdateMask: mask("resources"),
	}}}).(*v1.Flavor)
	if f.GetResources().GetVcpus() != 8 {
		t.Fatalf("unused flavor resize: %v", f)
	}

	d := h.ok(cDevserver("d2", "bob", "small", "eu", "", "id-2")).(*v1.Devserver)
	if d.GetState() != v1.DevserverState_DEVSERVER_STATE_PROVISIONING || d.GetSite() != "" {
		t.Fatalf("unplaced devserver: %v", d)
	}
	expire := timestamppb.New(epoch.Add(72 * time.Hour))
	d = h.ok(&fsmv1.Command{Op: &fsmv1.Command_UpdateDevserver{UpdateDevserver: &fsmv1.UpdateDevserver{
		Devserver: &v1.Devserver{Name: "d2", Sharers: []string{"carol"}, Lifespan: v1.Lifespan_LIFESPAN_TEMPORARY, ExpireTime: expire},
	}}}).(*v1.Devserver)
	if d.GetLifespan() != v1.Lifespan_LIFESPAN_TEMPORARY || !proto.Equal(d.GetExpireTime(), expire) || d.GetSharers()[0] != "carol" {
		t.Fatalf("devserver update: %v", d)
	}
	d1, _ := h.fsm.Store().View().GetDevserver("d1")
	if d1.GetSite() != "eu-1" || d1.GetHost() != "h1" {
		t.Fatalf("placed devserver site/host: %v", d1)
	}

	n := h.ok(&fsmv1.Command{Op: &fsmv1.Command_RegisterNode{RegisterNode: &fsmv1.RegisterNode{Node: &fsmv1.Node{
		Id: "n1", RaftAddress: "127.0.0.1:7000", GrpcAddress: "127.0.0.1:7001",
	}}}}).(*fsmv1.Node)
	if n.GetCreateIndex() != h.index {
		t.Fatalf("node: %v", n)
	}
	before := h.index
	again := h.ok(&fsmv1.Command{Op: &fsmv1.Command_RegisterNode{RegisterNode: &fsmv1.RegisterNode{Node: &fsmv1.Node{
		Id: "n1", RaftAddress: "127.0.0.1:7000", GrpcAddress: "127.0.0.1:7001",
	}}}}).(*fsmv1.Node)
	if again.GetModifyIndex() != before {
		t.Fatalf("re-registering the same addresses changed the node: %v", again)
	}
	h.ok(&fsmv1.Command{Op: &fsmv1.Command_DeregisterNode{DeregisterNode: &fsmv1.DeregisterNode{Id: "n1"}}})
	h.ok(&fsmv1.Command{Op: &fsmv1.Command_DeregisterNode{DeregisterNode: &fsmv1.DeregisterNode{Id: "n1"}}})
	h.ok(&fsmv1.Command{Op: &fsmv1.Command_Noop{Noop: &fsmv1.Noop{}}})

	// Deletes, children first.
	for _, del := range []struct{ kind, name string }{
		{"devserver", "d1"}, {"devserver", "d2"}, {"flavor", "small"}, {"host", "h1"}, {"host", "h3"},
		{"site", "eu-1"}, {"region", "eu"},
	} {
		h.ok(deleteCmd(del.kind, del.name))
	}
	v := h.fsm.Store().View()
	if _, err := v.GetRegion("eu"); apierror.KindOf(err) != apierror.NotFound {
		t.Fatalf("region eu after delete: %v", err)
	}
	if v.Index(state.TableRegions) != h.index {
		t.Fatalf("regions table index = %d, want %d", v.Index(state.TableRegions), h.index)
	}
}

func TestCommandsRejected(t *testing.T) {
	t.Parallel()
	expire := timestamppb.New(epoch)
	cases := []struct {
		name  string
		cmd   *fsmv1.Command
		kind  apierror.Kind
		field string
	}{
		{"region empty name", cRegion(""), apierror.InvalidArgument, "region.name"},
		{"region bad name", cRegion("EU West"), apierror.InvalidArgument, "region.name"},
		{"region duplicate", cRegion("eu"), apierror.AlreadyExists, "region"},
		{"region update missing", &fsmv1.Command{Op: &fsmv1.Command_UpdateRegion{UpdateRegion: &fsmv1.UpdateRegion{Region: &v1.Region{Name: "mars"}}}}, apierror.NotFound, "region"},
		{"region update bad path", &fsmv1.Command{Op: &fsmv1.Command_UpdateRegion{UpdateRegion: &fsmv1.UpdateRegion{Region: &v1.Region{Name: "eu"}, UpdateMask: mask("name")}}}, apierror.InvalidArgument, "update_mask"},
		{"region delete with sites", deleteCmd("region", "eu"), apierror.FailedPrecondition, ""},
		{"region delete missing", deleteCmd("region", "mars"), apierror.NotFound, "region"},
		{"site of missing region", cSite("mars-1", "mars"), apierror.NotFound, "region"},
		{"site duplicate", cSite("eu-1", "eu"), apierror.AlreadyExists, "site"},
		{"site without region", cSite("x-1", ""), apierror.InvalidArgument, "site.region"},
		{"site delete with hosts", deleteCmd("site", "eu-1"), apierror.FailedPrecondition, ""},
		{"site delete missing", deleteCmd("site", "mars-1"), apierror.NotFound, "site"},
		{"site update missing", &fsmv1.Command{Op: &fsmv1.Command_UpdateSite{UpdateSite: &fsmv1.UpdateSite{Site: &v1.Site{Name: "mars-1"}}}}, apierror.NotFound, "site"},
		{"site update region", &fsmv1.Command{Op: &fsmv1.Command_UpdateSite{UpdateSite: &fsmv1.UpdateSite{Site: &v1.Site{Name: "eu-1", Region: "us"}, UpdateMask: mask("region")}}}, apierror.InvalidArgument, "update_mask"},
		{"host update missing", &fsmv1.Command{Op: &fsmv1.Command_UpdateHost{UpdateHost: &fsmv1.UpdateHost{Host: &v1.Host{Name: "h9"}}}}, apierror.NotFound, "host"},
		{"host delete missing", deleteCmd("host", "h9"), apierror.NotFound, "host"},
		{"uncordon missing host", uncordon("h9"), apierror.NotFound, "host"},
		{"flavor update missing", &fsmv1.Command{Op: &fsmv1.Command_UpdateFlavor{UpdateFlavor: &fsmv1.UpdateFlavor{Flavor: &v1.Flavor{Name: "huge"}}}}, apierror.NotFound, "flavor"},
		{"flavor delete missing", deleteCmd("flavor", "huge"), apierror.NotFound, "flavor"},
		{"flavor bad kind", &fsmv1.Command{Op: &fsmv1.Command_CreateFlavor{CreateFlavor: &fsmv1.CreateFlavor{Flavor: &v1.Flavor{Name: "odd", Resources: res(1, 1024, 0, 0), Kind: 7}}}}, apierror.InvalidArgument, "flavor.kind"},
		{"region delete with a site", deleteCmd("region", "us"), apierror.FailedPrecondition, ""},
		{"host of missing site", cHost("h9", "mars-1"), apierror.NotFound, "site"},
		{"host duplicate", cHost("h1", "eu-1"), apierror.AlreadyExists, "host"},
		{"host negative cpus", &fsmv1.Command{Op: &fsmv1.Command_CreateHost{CreateHost: &fsmv1.CreateHost{Host: &v1.Host{Name: "h9", Site: "eu-1", Capacity: res(-1, 1024, 0, 0)}}}}, apierror.InvalidArgument, "host.capacity.vcpus"},
		{"host absurd memory", &fsmv1.Command{Op: &fsmv1.Command_CreateHost{CreateHost: &fsmv1.CreateHost{Host: &v1.Host{Name: "h9", Site: "eu-1", Capacity: res(8, 1<<40, 0, 0)}}}}, apierror.InvalidArgument, "host.capacity.memory_mib"},
		{"host no capacity", &fsmv1.Command{Op: &fsmv1.Command_CreateHost{CreateHost: &fsmv1.CreateHost{Host: &v1.Host{Name: "h9", Site: "eu-1"}}}}, apierror.InvalidArgument, "host.capacity"},
		{"host reserve above capacity", &fsmv1.Command{Op: &fsmv1.Command_CreateHost{CreateHost: &fsmv1.CreateHost{Host: &v1.Host{Name: "h9", Site: "eu-1", Capacity: res(8, 1024, 0, 0), Reserved: res(16, 0, 0, 0)}}}}, apierror.InvalidArgument, "host.reserved.vcpus"},
		{"host bad overcommit", &fsmv1.Command{Op: &fsmv1.Command_CreateHost{CreateHost: &fsmv1.CreateHost{Host: &v1.Host{Name: "h9", Site: "eu-1", Capacity: res(8, 1024, 0, 0), Overcommit: &v1.Overcommit{Cpu: 0.5}}}}}, apierror.InvalidArgument, "host.overcommit.cpu"},
		{"host bad uri", &fsmv1.Command{Op: &fsmv1.Command_CreateHost{CreateHost: &fsmv1.CreateHost{Host: &v1.Host{Name: "h9", Site: "eu-1", Capacity: res(8, 1024, 0, 0), LibvirtUri: "xen://x/"}}}}, apierror.InvalidArgument, "host.libvirt_uri"},
		{"host update shrinks below reserve", &fsmv1.Command{Op: &fsmv1.Command_UpdateHost{UpdateHost: &fsmv1.UpdateHost{Host: &v1.Host{Name: "h1", Reserved: res(100, 0, 0, 0)}, UpdateMask: mask("reserved")}}}, apierror.InvalidArgument, "host.reserved.vcpus"},
		{"host update site", &fsmv1.Command{Op: &fsmv1.Command_UpdateHost{UpdateHost: &fsmv1.UpdateHost{Host: &v1.Host{Name: "h1", Site: "us-1"}, UpdateMask: mask("site")}}}, apierror.InvalidArgument, "update_mask"},
		{"host delete with devservers", deleteCmd("host", "h1"), apierror.FailedPrecondition, ""},
		{"cordon without reason", cordon("h1", " "), apierror.InvalidArgument, "reason"},
		{"cordon missing host", cordon("h9", "x"), apierror.NotFound, "host"},
		{"flavor duplicate", cFlavor("small", 1, 1024), apierror.AlreadyExists, "flavor"},
		{"flavor zero memory", cFlavor("tiny", 1, 0), apierror.InvalidArgument, "flavor.resources.memory_mib"},
		{"flavor resize in use", &fsmv1.Command{Op: &fsmv1.Command_UpdateFlavor{UpdateFlavor: &fsmv1.UpdateFlavor{Flavor: &v1.Flavor{Name: "small", Resources: res(1, 1, 0, 0)}, UpdateMask: mask("resources")}}}, apierror.FailedPrecondition, ""},
		{"flavor delete in use", deleteCmd("flavor", "small"), apierror.FailedPrecondition, ""},
		{"devserver duplicate", cDevserver("d1", "bob", "small", "eu", "", "id-9"), apierror.AlreadyExists, "devserver"},
		{"devserver without id", cDevserver("d9", "bob", "small", "eu", "", ""), apierror.InvalidArgument, "devserver.id"},
		{"devserver bad owner", cDevserver("d9", "Bob Smith", "small", "eu", "", "id-9"), apierror.InvalidArgument, "devserver.owner"},
		{"devserver missing flavor", cDevserver("d9", "bob", "huge", "eu", "", "id-9"), apierror.NotFound, "flavor"},
		{"devserver missing region", cDevserver("d9", "bob", "small", "mars", "", "id-9"), apierror.NotFound, "region"},
		{"devserver missing host", cDevserver("d9", "bob", "small", "eu", "h9", "id-9"), apierror.NotFound, "host"},
		{"devserver host in other region", cDevserver("d9", "bob", "small", "eu", "h2", "id-9"), apierror.InvalidArgument, "devserver.host"},
		{"devserver on cordoned host", cDevserver("d9", "bob", "small", "us", "h2", "id-9"), apierror.FailedPrecondition, ""},
		{"devserver temporary without expiry", &fsmv1.Command{Op: &fsmv1.Command_CreateDevserver{CreateDevserver: &fsmv1.CreateDevserver{Devserver: &v1.Devserver{Name: "d9", Id: "id-9", Owner: "bob", Flavor: "small", Region: "eu", Lifespan: v1.Lifespan_LIFESPAN_TEMPORARY}}}}, apierror.InvalidArgument, "devserver.expire_time"},
		{"devserver permanent with expiry", &fsmv1.Command{Op: &fsmv1.Command_CreateDevserver{CreateDevserver: &fsmv1.CreateDevserver{Devserver: &v1.Devserver{Name: "d9", Id: "id-9", Owner: "bob", Flavor: "small", Region: "eu", Lifespan: v1.Lifespan_LIFESPAN_PERMANENT, ExpireTime: expire}}}}, apierror.InvalidArgument, "devserver.expire_time"},
		{"devserver sharer is owner", &fsmv1.Command{Op: &fsmv1.Command_UpdateDevserver{UpdateDevserver: &fsmv1.UpdateDevserver{Devserver: &v1.Devserver{Name: "d1", Sharers: []string{"alice"}}, UpdateMask: mask("sharers")}}}, apierror.InvalidArgument, "devserver.sharers"},
		{"devserver update missing", &fsmv1.Command{Op: &fsmv1.Command_UpdateDevserver{UpdateDevserver: &fsmv1.UpdateDevserver{Devserver: &v1.Devserver{Name: "d9"}}}}, apierror.NotFound, "devserver"},
		{"devserver delete missing", deleteCmd("devserver", "d9"), apierror.NotFound, "devserver"},
		{"node bad id", &fsmv1.Command{Op: &fsmv1.Command_RegisterNode{RegisterNode: &fsmv1.RegisterNode{Node: &fsmv1.Node{Id: "", RaftAddress: "a:1", GrpcAddress: "a:2"}}}}, apierror.InvalidArgument, "node.id"},
		{"node bad address", &fsmv1.Command{Op: &fsmv1.Command_RegisterNode{RegisterNode: &fsmv1.RegisterNode{Node: &fsmv1.Node{Id: "n1", RaftAddress: "nowhere", GrpcAddress: "a:2"}}}}, apierror.InvalidArgument, "node.raft_address"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			seed(h)
			h.ok(cordon("h2", "maintenance"))
			before := h.persisted()
			r := h.apply(tc.cmd)
			if r.Err == nil {
				t.Fatalf("accepted; want %v", tc.kind)
			}
			var e *apierror.Error
			if !errors.As(r.Err, &e) || e.Kind != tc.kind || e.Field != tc.field {
				t.Fatalf("error = %#v (%v); want kind %v field %q", e, r.Err, tc.kind, tc.field)
			}
			if after := h.persisted(); !bytes.Equal(before, after) {
				t.Fatalf("a rejected command changed the state")
			}
		})
	}
}

func TestBatchRejectsOnlyTheBadCommand(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	data, err := EncodeBatch([]*fsmv1.Command{cRegion("eu"), cRegion("eu"), cSite("eu-1", "eu")})
	if err != nil {
		t.Fatal(err)
	}
	res := h.fsm.Apply(&raft.Log{Index: 7, Data: data}).([]Result)
	if res[0].Err != nil || res[1].Err == nil || res[2].Err != nil {
		t.Fatalf("results = %+v; want ok, AlreadyExists, ok", res)
	}
	if res[2].Index != 7 || h.fsm.AppliedIndex() != 7 {
		t.Fatalf("index: result %d, applied %d; want 7", res[2].Index, h.fsm.AppliedIndex())
	}
}

func TestUnknownCommand(t *testing.T) {
	t.Parallel()
	// A command from a newer build: type number 4000 is unknown here.
	unknown := func(skippable bool) []byte {
		cmd := &fsmv1.Command{IgnoreIfUnknown: skippable}
		cmd.ProtoReflect().SetUnknown(protowireField(4000))
		data, err := EncodeBatch([]*fsmv1.Command{cmd})
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	h := newHarness(t)
	res := h.fsm.Apply(&raft.Log{Index: 1, Data: unknown(true)}).([]Result)
	if res[0].Err != nil {
		t.Fatalf("skippable unknown command: %v", res[0].Err)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("an unknown command that may not be skipped must stop the node")
		}
	}()
	h.fsm.Apply(&raft.Log{Index: 2, Data: unknown(false)})
}

func TestSnapshotRestoreEveryTable(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	seed(h)
	h.ok(cordon("h2", "rma"))
	h.ok(&fsmv1.Command{Op: &fsmv1.Command_RegisterNode{RegisterNode: &fsmv1.RegisterNode{Node: &fsmv1.Node{
		Id: "n1", RaftAddress: "127.0.0.1:7000", GrpcAddress: "127.0.0.1:7001", HttpAddress: "127.0.0.1:7002",
	}}}})
	h.ok(&fsmv1.Command{Op: &fsmv1.Command_CreateNotice{CreateNotice: &fsmv1.CreateNotice{Notice: &v1.Notice{
		Id: "n1", Owner: "alice", Kind: v1.NoticeKind_NOTICE_KIND_EXPIRING, Subject: "d1", Message: "expires in 24h"}}}})
	seedContainers(h)
	h.ok(cHost("h3", "eu-1"))
	h.ok(running("d1", "id-1"))
	h.ok(cMigration("m1", "d1", "id-1", "h3"))
	want := h.persisted()

	snap, err := h.fsm.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	fresh := newHarness(t)
	oldAbandon := fresh.fsm.Store().AbandonCh()
	if err := fresh.fsm.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if got := fresh.persisted(); !bytes.Equal(got, want) {
		t.Fatal("restored state differs from the snapshot's source")
	}
	select {
	case <-oldAbandon:
	default:
		t.Fatal("restore did not wake watchers of the old state")
	}
	v := fresh.fsm.Store().View()
	for _, table := range state.Tables {
		if v.Index(table) != h.fsm.Store().View().Index(table) {
			t.Errorf("table %s index not restored", table)
		}
	}
	if v.GetNode("n1") == nil {
		t.Error("nodes table not restored")
	}
	if len(v.NoticesOf("alice")) != 1 {
		t.Error("notices table not restored")
	}
	if len(v.Profiles()) != 1 || len(v.Pools()) != 1 || len(v.Containers()) != 1 || len(v.Migrations()) != 1 {
		t.Error("container tables not restored")
	}
	if fresh.fsm.AppliedIndex() != h.index {
		t.Errorf("applied index after restore = %d, want %d", fresh.fsm.AppliedIndex(), h.index)
	}

	// A corrupt snapshot fails and leaves the state as it was.
	corrupt := append([]byte{}, sink.Bytes()...)
	corrupt = corrupt[:len(corrupt)/2]
	if err := fresh.fsm.Restore(io.NopCloser(bytes.NewReader(corrupt))); err == nil {
		t.Fatal("restore of a truncated snapshot succeeded")
	}
	if got := fresh.persisted(); !bytes.Equal(got, want) {
		t.Fatal("a failed restore changed the state")
	}
}

type memSink struct{ bytes.Buffer }

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { return nil }
func (s *memSink) Close() error  { return nil }
