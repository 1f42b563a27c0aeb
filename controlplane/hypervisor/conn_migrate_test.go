package hypervisor

import (
	"testing"
	"time"

	libvirt "github.com/digitalocean/go-libvirt"
)

func TestJobStatsFromTypedParams(t *testing.T) {
	u := func(v uint64) libvirt.TypedParamValue { return *libvirt.NewTypedParamValueUllong(v) }
	// What libvirt 9.0 reports while a migration runs (DomainGetJobStats).
	running := []libvirt.TypedParam{
		{Field: libvirt.DomainJobOperationStr, Value: *libvirt.NewTypedParamValueInt(5)},
		{Field: libvirt.DomainJobTimeElapsed, Value: u(2029)},
		{Field: libvirt.DomainJobDataTotal, Value: u(134610944)},
		{Field: libvirt.DomainJobDataProcessed, Value: u(27316224)},
		{Field: libvirt.DomainJobDataRemaining, Value: u(90724352)},
		{Field: libvirt.DomainJobMemoryTotal, Value: u(134610944)},
		{Field: libvirt.DomainJobMemoryProcessed, Value: u(27316224)},
		{Field: libvirt.DomainJobMemoryRemaining, Value: u(90724352)},
		{Field: libvirt.DomainJobMemoryBps, Value: u(21012480)},
		{Field: libvirt.DomainJobMemoryDirtyRate, Value: u(10)},
		{Field: libvirt.DomainJobMemoryPageSize, Value: u(4096)},
		{Field: libvirt.DomainJobMemoryIteration, Value: u(1)},
		{Field: libvirt.DomainJobDowntime, Value: u(300)},
		{Field: libvirt.DomainJobAutoConvergeThrottle, Value: *libvirt.NewTypedParamValueInt(20)},
		{Field: "memory_constant", Value: u(8213)}, // ignored
	}
	got := jobStatsFrom(int32(libvirt.DomainJobUnbounded), running)
	want := JobStats{
		Type: JobUnbounded, Operation: JobMigrationOut, Elapsed: 2029 * time.Millisecond,
		DataTotal: 134610944, DataProcessed: 27316224, DataRemaining: 90724352,
		MemoryTotal: 134610944, MemoryProcessed: 27316224, MemoryRemaining: 90724352,
		DataRate: 21012480, DirtyRate: 40960, Iteration: 1, ExpectedDowntime: 300 * time.Millisecond,
		AutoConvergeThrottle: 20,
	}
	if got != want {
		t.Errorf("running:\n got %+v\nwant %+v", got, want)
	}
	// While a migration that copies storage copies the disk (libvirt 9.0, measured): the data
	// counts are the disk's, memory's are zero, and there is no rate.
	disk := jobStatsFrom(int32(libvirt.DomainJobUnbounded), []libvirt.TypedParam{
		{Field: libvirt.DomainJobOperationStr, Value: *libvirt.NewTypedParamValueInt(5)},
		{Field: libvirt.DomainJobTimeElapsed, Value: u(1202)},
		{Field: libvirt.DomainJobDataTotal, Value: u(134217728)},
		{Field: libvirt.DomainJobDataProcessed, Value: u(33554432)},
		{Field: libvirt.DomainJobDataRemaining, Value: u(100663296)},
		{Field: libvirt.DomainJobMemoryTotal, Value: u(0)},
		{Field: libvirt.DomainJobMemoryDirtyRate, Value: u(0)},
		{Field: libvirt.DomainJobMemoryIteration, Value: u(0)},
		{Field: libvirt.DomainJobDiskTotal, Value: u(134217728)},
		{Field: libvirt.DomainJobDiskProcessed, Value: u(33554432)},
		{Field: libvirt.DomainJobDiskRemaining, Value: u(100663296)},
	})
	if want := (JobStats{Type: JobUnbounded, Operation: JobMigrationOut, Elapsed: 1202 * time.Millisecond,
		DataTotal: 134217728, DataProcessed: 33554432, DataRemaining: 100663296,
		DiskTotal: 134217728, DiskProcessed: 33554432, DiskRemaining: 100663296}); disk != want {
		t.Errorf("disk copy:\n got %+v\nwant %+v", disk, want)
	}
	// A completed migration, on its destination: the downtime is the real one.
	done := jobStatsFrom(int32(libvirt.DomainJobCompleted), []libvirt.TypedParam{
		{Field: libvirt.DomainJobOperationStr, Value: *libvirt.NewTypedParamValueInt(4)},
		{Field: libvirt.DomainJobDowntime, Value: u(12)},
		{Field: libvirt.DomainJobSetupTime, Value: u(3)},
	})
	if done.Type != JobCompleted || done.Operation != JobMigrationIn || done.Downtime != 12*time.Millisecond ||
		done.ExpectedDowntime != 0 || done.SetupTime != 3*time.Millisecond {
		t.Errorf("completed: %+v", done)
	}
	failed := jobStatsFrom(int32(libvirt.DomainJobFailed), []libvirt.TypedParam{
		{Field: libvirt.DomainJobOperationStr, Value: *libvirt.NewTypedParamValueInt(42)},
		{Field: libvirt.DomainJobErrmsg, Value: *libvirt.NewTypedParamValueString("boom")},
	})
	if failed.Type != JobFailed || failed.Operation != "operation 42" || failed.Error != "boom" {
		t.Errorf("failed: %+v", failed)
	}
	if got := jobType(9); got != "type 9" {
		t.Errorf("jobType(9) = %q", got)
	}
}

func TestCheckMigration(t *testing.T) {
	ok := []struct {
		uri  string
		fake bool
		p    MigrationParams
	}{
		{"qemu+tcp://10.210.0.12/system", false, MigrationParams{}},
		{"qemu+tls://h2.example/system", false, MigrationParams{BandwidthMiBps: 100, MaxDowntime: time.Second, ParallelConnections: 4}},
		{"fake://m2", true, MigrationParams{}},
		{"fake://m2?cpus=4", true, MigrationParams{AutoConverge: true, PostCopy: true}},
	}
	for _, c := range ok {
		if err := checkMigration(MigrationTarget{URI: c.uri}, c.p, c.fake); err != nil {
			t.Errorf("checkMigration(%q, %+v, fake=%v) = %v", c.uri, c.p, c.fake, err)
		}
	}
	bad := []struct {
		uri  string
		fake bool
		p    MigrationParams
	}{
		{"", false, MigrationParams{}},
		{"fake://m2", false, MigrationParams{}},
		{"qemu+tcp://h2/system", true, MigrationParams{}},
		{"xen://h2/", false, MigrationParams{}},
		{"qemu+tcp://h2/system", false, MigrationParams{BandwidthMiBps: 1 << 50}},
		{"qemu+tcp://h2/system", false, MigrationParams{MaxDowntime: time.Microsecond}},
		{"qemu+tcp://h2/system", false, MigrationParams{ParallelConnections: -1}},
	}
	for _, c := range bad {
		if err := checkMigration(MigrationTarget{URI: c.uri}, c.p, c.fake); err == nil {
			t.Errorf("checkMigration(%q, %+v, fake=%v) passed", c.uri, c.p, c.fake)
		}
	}
}
