package hypervisor

import (
	"errors"
	"slices"
	"testing"
	"time"
)

func TestMemoryVolumes(t *testing.T) {
	ctx := testCtx(t)
	m := NewMemory(MemoryOptions{Host: "m1"})
	for _, bad := range []Volume{
		{Name: "../x.raw", Capacity: 1 << 30}, {Name: "", Capacity: 1 << 30}, {Name: "x.raw"},
		{Name: "x.vmdk", Capacity: 1 << 30, Format: "vmdk"}, {Name: "x.raw", Capacity: maxVolumeBytes + 1},
	} {
		wantKind(t, m.PrepareVolume(ctx, bad), KindInvalidArgument)
	}
	wantKind(t, m.RemoveVolume(ctx, "a/b"), KindInvalidArgument)

	// Made (with the pool), kept, replaced by one of another size; the format defaults to raw.
	v := Volume{Name: "v.raw", Capacity: 1 << 30}
	for range 2 {
		if err := m.PrepareVolume(ctx, v); err != nil {
			t.Fatal(err)
		}
	}
	if got := m.Volumes(); len(got) != 1 || got["v.raw"] != 1 {
		t.Errorf("Volumes = %v, want v.raw of 1 GiB", got)
	}
	v.Capacity = 2 << 30
	if err := m.PrepareVolume(ctx, v); err != nil {
		t.Fatal(err)
	}
	if got := m.Volumes(); got["v.raw"] != 2 {
		t.Errorf("Volumes after a PrepareVolume of another size = %v, want v.raw of 2 GiB", got)
	}
	for range 2 { // gone, then not there: both fine
		if err := m.RemoveVolume(ctx, "v.raw"); err != nil {
			t.Fatal(err)
		}
	}
	if got := m.Volumes(); len(got) != 0 {
		t.Errorf("Volumes after RemoveVolume = %v", got)
	}

	// A domain's volume: listed by DomainVolumes, and neither prepared nor removed while a
	// domain uses it, running or not.
	if _, err := m.DefineAndStart(ctx, devserverSpec("d", 1, 128, 3)); err != nil {
		t.Fatal(err)
	}
	if _, err := m.DefineAndStart(ctx, devserverSpec("nodisk", 1, 128, 0)); err != nil {
		t.Fatal(err)
	}
	want := Volume{Name: "d.raw", Capacity: 3 << 30, Format: "raw"}
	if got, err := m.DomainVolumes(ctx, "d"); err != nil || !slices.Equal(got, []Volume{want}) {
		t.Errorf("DomainVolumes(d) = %+v, %v; want [%+v]", got, err, want)
	}
	if got, err := m.DomainVolumes(ctx, "nodisk"); err != nil || len(got) != 0 {
		t.Errorf("DomainVolumes(nodisk) = %+v, %v; want none", got, err)
	}
	_, err := m.DomainVolumes(ctx, "nope")
	wantKind(t, err, KindNotFound)
	wantKind(t, m.PrepareVolume(ctx, want), KindFailedPrecondition)
	wantKind(t, m.RemoveVolume(ctx, "d.raw"), KindFailedPrecondition)
	if err := m.Destroy(ctx, "d"); err != nil {
		t.Fatal(err)
	}
	err = m.RemoveVolume(ctx, "d.raw")
	wantKind(t, err, KindFailedPrecondition)
	t.Logf("in use: %v", err)
	if err := m.Undefine(ctx, "d"); err != nil {
		t.Fatal(err)
	}
	if got := m.Volumes(); len(got) != 0 {
		t.Errorf("Volumes after Undefine = %v", got)
	}

	// Faults and counts, as for every operation (invalid requests are refused before they count).
	m.FailNext(OpPrepareVolume, errors.New("boom"))
	wantKind(t, m.PrepareVolume(ctx, want), KindInternal)
	m.FailNext(OpRemoveVolume, &Error{Kind: KindUnavailable, Message: "gone"})
	wantKind(t, m.RemoveVolume(ctx, "d.raw"), KindUnavailable)
	if m.Calls(OpPrepareVolume) != 5 || m.Calls(OpRemoveVolume) != 5 || m.Calls(OpDomainVolumes) != 3 {
		t.Errorf("calls: prepare %d, remove %d, domain volumes %d", m.Calls(OpPrepareVolume), m.Calls(OpRemoveVolume), m.Calls(OpDomainVolumes))
	}
}

// A guest with a 1 GiB disk moves: refused without CopyStorage and without the destination's
// pool, failed by a volume of another size; then its disk goes first, then its memory, the
// destination's volume in use meanwhile, and the source's left for RemoveVolume.
func TestMemoryMigrateDisk(t *testing.T) {
	ctx := testCtx(t)
	p := newMemPair(t, 8192)
	if _, err := p.src.DefineAndStart(ctx, devserverSpec("d1", 2, 1024, 1)); err != nil {
		t.Fatal(err)
	}
	expectEvents(t, p.srcEv, "d1 defined/added", "d1 started/booted")
	vol := Volume{Name: "d1.raw", Capacity: 1 << 30, Format: "raw"}
	vols, err := p.src.DomainVolumes(ctx, "d1")
	if err != nil || !slices.Equal(vols, []Volume{vol}) {
		t.Fatalf("DomainVolumes = %+v, %v", vols, err)
	}

	wantKind(t, p.src.Migrate(ctx, "d1", p.target, MigrationParams{}), KindFailedPrecondition)
	err = p.src.Migrate(ctx, "d1", p.target, MigrationParams{CopyStorage: true})
	wantKind(t, err, KindNotFound)
	t.Logf("no pool: %v", err)
	small := vol
	small.Capacity = 512 * mib
	if err := p.dst.PrepareVolume(ctx, small); err != nil {
		t.Fatal(err)
	}
	err = p.src.Migrate(ctx, "d1", p.target, MigrationParams{CopyStorage: true})
	wantKind(t, err, KindInternal)
	t.Logf("another size: %v", err)
	expectEvents(t, p.dstEv, "d1 started/migrated", "d1 crashed/failed") // as libvirt's
	if d, err := p.src.Lookup(ctx, "d1"); err != nil || d.State != StateRunning {
		t.Fatalf("source after the refusals: %+v, %v", d, err)
	}
	if got := p.src.Volumes(); got["d1.raw"] != 1 {
		t.Fatalf("source volumes after the refusals: %v", got)
	}

	if err := p.dst.PrepareVolume(ctx, vol); err != nil {
		t.Fatal(err)
	}
	// The disk's content goes with it (the destination's volume is overwritten whole).
	if err := p.src.WriteVolumeAt(vol.Name, 700*mib+1, []byte("carried")); err != nil {
		t.Fatal(err)
	}
	if err := p.dst.WriteVolumeAt(vol.Name, 3*mib, []byte("stale")); err != nil {
		t.Fatal(err)
	}
	// 100 MiB/s, then 200 from 1 s on: the disk's 1024 MiB are copied at 5.62 s, then memory
	// until 60 MiB are left (300 ms at 200 MiB/s), at 10.44 s.
	done := p.migrate(t, "d1", MigrationParams{CopyStorage: true, BandwidthMiBps: 100})
	expectEvents(t, p.dstEv, "d1 started/migrated")
	wantKind(t, p.dst.RemoveVolume(ctx, vol.Name), KindFailedPrecondition) // the arriving domain's
	wantKind(t, p.dst.PrepareVolume(ctx, vol), KindFailedPrecondition)
	p.clock.Advance(time.Second)
	s, err := p.src.JobStats(ctx, "d1")
	if err != nil {
		t.Fatal(err)
	}
	if want := (JobStats{Type: JobUnbounded, Operation: JobMigrationOut, Elapsed: time.Second,
		DataTotal: 1 << 30, DataProcessed: 100 * mib, DataRemaining: 924 * mib,
		DiskTotal: 1 << 30, DiskProcessed: 100 * mib, DiskRemaining: 924 * mib}); s != want {
		t.Errorf("during the disk copy:\n got %+v\nwant %+v", s, want)
	}
	if err := p.src.SetMaxSpeed(ctx, "d1", 200); err != nil {
		t.Fatal(err)
	}
	p.clock.Advance(time.Second)
	if s, _ := p.src.JobStats(ctx, "d1"); s.DiskProcessed != 300*mib || s.MemoryTotal != 0 {
		t.Errorf("a second after SetMaxSpeed(200): %+v; want 300 MiB of disk copied", s)
	}
	p.clock.Advance(4 * time.Second)
	s, _ = p.src.JobStats(ctx, "d1")
	if s.DiskProcessed != 1<<30 || s.DiskRemaining != 0 || s.MemoryTotal != 1<<30 || s.MemoryProcessed != 76*mib ||
		s.DataTotal != 2<<30 || s.DataProcessed != 1100*mib || s.DataRemaining != 948*mib || s.DataRate != 200*mib || s.Iteration != 1 {
		t.Errorf("at 6 s, 0.38 s into memory: %+v", s)
	}
	p.clock.Advance(4440 * time.Millisecond)
	if err := waitErr(t, done); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	expectEvents(t, p.srcEv, "d1 suspended/migrated", "d1 stopped/migrated")
	expectEvents(t, p.dstEv, "d1 defined/added", "d1 resumed/migrated")
	if vols, err := p.dst.DomainVolumes(ctx, "d1"); err != nil || !slices.Equal(vols, []Volume{vol}) {
		t.Errorf("destination DomainVolumes = %+v, %v", vols, err)
	}
	s, err = p.dst.JobStats(ctx, "d1")
	if err != nil || s.Type != JobCompleted || s.Elapsed != 10740*time.Millisecond || s.DataTotal != 1<<30 ||
		s.DiskTotal != 0 || s.DataRate != 200*mib || s.Downtime != 300*time.Millisecond {
		t.Errorf("destination's completed stats = %+v, %v; want 10.74 s, memory only, at 200 MiB/s", s, err)
	}
	if got := readBack(t, p.dst, vol.Name, 700*mib+1, 7); string(got) != "carried" {
		t.Errorf("the destination's volume reads %q where the source's had data", got)
	}
	if n, _ := p.dst.VolumeAllocated(vol.Name); n != mib {
		t.Errorf("the destination's volume holds %d bytes of data, want the source's one block", n)
	}
	// The source keeps its volume until RemoveVolume.
	if got := p.src.Volumes(); got["d1.raw"] != 1 {
		t.Fatalf("source volumes after the move: %v", got)
	}
	wantKind(t, p.dst.RemoveVolume(ctx, vol.Name), KindFailedPrecondition)
	if err := p.src.RemoveVolume(ctx, vol.Name); err != nil {
		t.Fatal(err)
	}
	if got := p.src.Volumes(); len(got) != 0 {
		t.Fatalf("source volumes after RemoveVolume: %v", got)
	}

	// Back, into no volume (the pool is there: the migration makes it, as libvirt does), aborted
	// during the disk copy: the guest and its volume stay; the made volume is left over.
	p.target, p.src, p.dst, p.srcEv, p.dstEv = MigrationTarget{Host: "m1", URI: "fake://m1"}, p.dst, p.src, p.dstEv, p.srcEv
	done = p.migrate(t, "d1", MigrationParams{CopyStorage: true})
	expectEvents(t, p.dstEv, "d1 started/migrated")
	p.clock.Advance(500 * time.Millisecond)
	if err := p.src.AbortJob(ctx, "d1"); err != nil {
		t.Fatal(err)
	}
	wantKind(t, waitErr(t, done), KindAborted)
	expectEvents(t, p.dstEv, "d1 crashed/failed")
	if d, err := p.src.Lookup(ctx, "d1"); err != nil || d.State != StateRunning {
		t.Errorf("source after the abort: %+v, %v", d, err)
	}
	if vols, err := p.src.DomainVolumes(ctx, "d1"); err != nil || !slices.Equal(vols, []Volume{vol}) {
		t.Errorf("source DomainVolumes after the abort = %+v, %v", vols, err)
	}
	if got := p.dst.Volumes(); got["d1.raw"] != 1 {
		t.Errorf("destination volumes after the abort: %v; want the one the migration made", got)
	}
	if err := p.dst.RemoveVolume(ctx, vol.Name); err != nil {
		t.Fatal(err)
	}
}
