package hypervisor

// Live migration between two real libvirt daemons (QEMU TCG guests), peer to peer over the
// hosts' private network. One fleet serves the subtests, in order, to keep the package's tests
// short.

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/devfleet/devfleet/e2e/libvirthost"
)

func TestLibvirtMigration(t *testing.T) {
	hosts := libvirthost.StartT(t, 2)
	h1, h2 := hosts[0], hosts[1]
	c1, c2 := dialHost(t, h1), dialHost(t, h2)
	ctx := testCtx(t)
	e1, err := c1.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e2, err := c2.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	to2 := MigrationTarget{Host: h2.Name, URI: h2.TCPURI}

	t.Run("live", func(t *testing.T) {
		spec := devserverSpec("ds-mig", 1, 128, 0)
		if _, err := c1.DefineAndStart(ctx, spec); err != nil {
			t.Fatal(err)
		}
		expectDomainEvents(t, e1, spec.Name, "defined/added", "started/booted")
		if s, err := c1.JobStats(ctx, spec.Name); err != nil || s.Type != JobNone {
			t.Errorf("JobStats before = %+v, %v; want none", s, err)
		}
		begin := time.Now()
		// All the options at once: libvirt 9.0 and QEMU 7.2 take them.
		err := c1.Migrate(ctx, spec.Name, to2, MigrationParams{
			MaxDowntime: 400 * time.Millisecond, AutoConverge: true, PostCopy: true, ParallelConnections: 2})
		if err != nil {
			t.Fatalf("Migrate: %v", err)
		}
		took := time.Since(begin)
		if got := domainEvents(t, e1, spec.Name, 2); !slices.Equal(got, []string{"suspended/migrated", "stopped/migrated"}) {
			t.Errorf("source events %v", got)
		}
		if got := domainEvents(t, e2, spec.Name, 3); !slices.Equal(got, []string{"started/migrated", "defined/added", "resumed/migrated"}) {
			t.Errorf("destination events %v", got)
		}
		d, err := c2.Lookup(ctx, spec.Name)
		if err != nil || d.State != StateRunning || d.Metadata != spec.Metadata {
			t.Errorf("destination Lookup = %+v, %v", d, err)
		}
		_, err = c1.Lookup(ctx, spec.Name)
		wantKind(t, err, KindNotFound)
		_, err = c1.JobStats(ctx, spec.Name)
		wantKind(t, err, KindNotFound) // what a controller polling the source sees at the end
		s, err := c2.JobStats(ctx, spec.Name)
		if err != nil || s.Type != JobCompleted || s.Operation != JobMigrationIn || s.MemoryTotal < 128*mib {
			t.Fatalf("destination JobStats = %+v, %v; want the completed migration in", s, err)
		}
		t.Logf("live migration of a %d MiB guest: %v; libvirt: elapsed %v, downtime %v, %d KiB sent at %.1f MiB/s, %d iterations",
			spec.MemoryMiB, took.Round(time.Millisecond), s.Elapsed, s.Downtime, s.DataProcessed>>10,
			float64(s.DataRate)/mib, s.Iteration)
		if s.Downtime <= 0 || s.Downtime > 5*time.Second {
			t.Errorf("downtime %v", s.Downtime)
		}
		if again, _ := c2.JobStats(ctx, spec.Name); again != s {
			t.Errorf("the completed statistics changed when read again: %+v", again)
		}
		expectListed(t, h1, nil)
		expectListed(t, h2, []string{spec.Name})

		// Errors: not here, a bad destination, not running.
		wantKind(t, c1.Migrate(ctx, spec.Name, to2, MigrationParams{}), KindNotFound)
		wantKind(t, c2.Migrate(ctx, spec.Name, MigrationTarget{URI: "fake://h1"}, MigrationParams{}), KindInvalidArgument)
		if err := c2.Migrate(ctx, spec.Name, MigrationTarget{URI: h2.TCPURI}, MigrationParams{}); err == nil {
			t.Error("a migration to the same host succeeded")
		} else {
			t.Logf("to the same host: %v (%v)", err, KindOf(err))
		}
		if err := c2.Destroy(ctx, spec.Name); err != nil {
			t.Fatal(err)
		}
		wantKind(t, c2.Migrate(ctx, spec.Name, MigrationTarget{URI: h1.TCPURI}, MigrationParams{}), KindFailedPrecondition)
		// A shut-off domain still has the statistics of its migration in (read with
		// KEEP_COMPLETED); without them it would be KindNotFound.
		if s, err := c2.JobStats(ctx, spec.Name); err != nil || s.Type != JobCompleted {
			t.Errorf("JobStats of the shut-off domain = %+v, %v", s, err)
		}
		wantKind(t, c2.AbortJob(ctx, spec.Name), KindFailedPrecondition)
		if err := c2.Undefine(ctx, spec.Name); err != nil {
			t.Fatal(err)
		}
	})

	// A guest with a local disk: its volume is copied to a volume prepared on the destination,
	// then removed from the source; refused without the copy or without the destination's pool.
	t.Run("disk", func(t *testing.T) { migrateDisk(t, ctx, h1, h2, c1, c2, e1, e2) })

	// A guest whose memory is random (file-backed RAM, written from outside) migrates slowly
	// enough under a bandwidth cap to be watched. The Connector's handles drive it, as a
	// controller would.
	const name = "ds-slow"
	const randomMiB = 96
	xml := strings.Replace(libvirthost.TinyDomainXML(name, 128), "</memory>",
		"</memory>\n  <memoryBacking><source type='file'/><access mode='shared'/></memoryBacking>", 1)
	virsh(t, h1, "define", writeFile(t, "slow.xml", xml))
	if err := c1.Start(ctx, name); err != nil {
		t.Fatal(err)
	}
	fillRAM(t, h1, name, 16, randomMiB)
	hl := newHealthLog()
	conn := newConnector(t, realOptions(t, hl))
	hv1, err := conn.Open(h1.Name, h1.URI)
	if err != nil {
		t.Fatal(err)
	}
	hl.expect(t, h1.Name, true)
	mainConn := clientIDs(t, h1)
	if len(mainConn) != 2 { // c1 and the Connector's
		t.Fatalf("clients of h1: %v", mainConn)
	}

	t.Run("abort", func(t *testing.T) {
		done := migrateAsync(ctx, hv1, name, to2, MigrationParams{BandwidthMiBps: 8})
		s := waitProgress(t, hv1, name, 4*mib)
		if n := len(clientIDs(t, h1)); n != 3 {
			t.Errorf("%d clients of h1 during the migration, want 3 (the migration has its own connection)", n)
		}
		if d, err := c2.Lookup(ctx, name); err != nil || d.State != StatePaused {
			t.Errorf("destination during the migration: %+v, %v; want it paused", d, err)
		}
		_, err := c2.JobStats(ctx, name)
		wantKind(t, err, KindFailedPrecondition) // statistics are the source's
		begin := time.Now()
		wantKind(t, c2.AbortJob(ctx, name), KindFailedPrecondition) // abort at the source
		if took := time.Since(begin); took > time.Second {
			t.Errorf("AbortJob on the destination took %v", took)
		}
		begin = time.Now()
		if err := hv1.AbortJob(ctx, name); err != nil {
			t.Fatal(err)
		}
		abortTook := time.Since(begin)
		err = <-done
		returned := time.Since(begin)
		wantKind(t, err, KindAborted)
		t.Logf("aborted after %d MiB at %v: AbortJob took %v, Migrate returned %v after it: %v",
			s.DataProcessed/mib, s.Elapsed, abortTook.Round(time.Millisecond), returned.Round(time.Millisecond), err)
		if got := domainEvents(t, e2, name, 2); !slices.Equal(got, []string{"started/migrated", "crashed/failed"}) {
			t.Errorf("destination events %v", got)
		}
		if d, err := hv1.Lookup(ctx, name); err != nil || d.State != StateRunning {
			t.Errorf("source after the abort: %+v, %v; want it running", d, err)
		}
		_, err = c2.Lookup(ctx, name)
		wantKind(t, err, KindNotFound)
		expectListed(t, h1, []string{name})
		expectListed(t, h2, nil)
		if s, err := hv1.JobStats(ctx, name); err != nil || s.Type.Active() {
			t.Errorf("source JobStats after the abort = %+v, %v", s, err)
		}
		wantKind(t, hv1.AbortJob(ctx, name), KindFailedPrecondition)
		eventually(t, "the migration's connection to close", func() bool { return len(clientIDs(t, h1)) == 2 })
	})

	t.Run("slow", func(t *testing.T) {
		const capMiB, raisedMiB = 16, 32
		begin := time.Now()
		done := migrateAsync(ctx, hv1, name, to2, MigrationParams{BandwidthMiBps: capMiB, MaxDowntime: 400 * time.Millisecond})
		first := waitProgress(t, hv1, name, 1)
		if got := strings.TrimSpace(virsh(t, h1, "migrate-getmaxdowntime", name)); got != "400" {
			t.Errorf("max downtime during the migration: %s ms, want 400", got)
		}
		samples := []JobStats{first}
		sample := func(n int) {
			for range n {
				time.Sleep(500 * time.Millisecond)
				s, err := hv1.JobStats(ctx, name)
				if err != nil {
					t.Fatalf("JobStats: %v", err)
				}
				prev := samples[len(samples)-1]
				if s.Type != JobUnbounded || s.Operation != JobMigrationOut {
					t.Fatalf("JobStats = %+v", s)
				}
				if s.DataProcessed <= prev.DataProcessed || s.DataRemaining >= prev.DataRemaining {
					t.Errorf("no progress: processed %d -> %d, remaining %d -> %d",
						prev.DataProcessed, s.DataProcessed, prev.DataRemaining, s.DataRemaining)
				}
				samples = append(samples, s)
			}
		}
		sample(5)
		capped := samples[len(samples)-1]
		rate := rateBetween(samples[1], capped)
		t.Logf("capped at %d MiB/s: %.2f MiB/s achieved (processed/elapsed over %v), libvirt says %.2f MiB/s; %d MiB left",
			capMiB, rate, capped.Elapsed-samples[1].Elapsed, float64(capped.DataRate)/mib, capped.DataRemaining/mib)
		if rate > capMiB*1.25 || rate < capMiB*0.6 {
			t.Errorf("rate %.2f MiB/s under a cap of %d", rate, capMiB)
		}

		if err := hv1.SetMaxSpeed(ctx, name, raisedMiB); err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(virsh(t, h1, "migrate-getspeed", name)); got != "32" {
			t.Errorf("migrate-getspeed after SetMaxSpeed: %s", got)
		}
		samples = samples[len(samples)-1:]
		sample(2)
		raised := rateBetween(samples[0], samples[len(samples)-1])
		t.Logf("raised to %d MiB/s: %.2f MiB/s achieved, libvirt says %.2f MiB/s",
			raisedMiB, raised, float64(samples[len(samples)-1].DataRate)/mib)
		if raised < rate*1.5 {
			t.Errorf("SetMaxSpeed(%d) did not speed the migration up: %.2f -> %.2f MiB/s", raisedMiB, rate, raised)
		}
		if err := <-done; err != nil {
			t.Fatalf("Migrate: %v", err)
		}
		took := time.Since(begin)
		// Right after the end the source has no job: the domain is gone from it.
		_, err := hv1.JobStats(ctx, name)
		wantKind(t, err, KindNotFound)
		s, err := c2.JobStats(ctx, name)
		if err != nil || s.Type != JobCompleted {
			t.Fatalf("destination JobStats = %+v, %v", s, err)
		}
		t.Logf("slow migration: %v in all; libvirt: elapsed %v, downtime %v (max 400ms), %d MiB sent, %.2f MiB/s on average",
			took.Round(time.Millisecond), s.Elapsed, s.Downtime, s.DataProcessed/mib, float64(s.DataRate)/mib)
		if took < 3*time.Second {
			t.Errorf("the migration took only %v: too fast to have been watched", took)
		}
		if s.DataProcessed < randomMiB*mib {
			t.Errorf("%d MiB sent, want at least the %d MiB of random memory", s.DataProcessed/mib, randomMiB)
		}
		expectListed(t, h1, nil)
		expectListed(t, h2, []string{name})
		eventually(t, "the migration's connection to close", func() bool { return len(clientIDs(t, h1)) == 2 })
	})

	// The Connector drops the host's connection during a migration (the daemon dropped it): the
	// migration's own connection is cut with it, Migrate returns KindUnavailable, and the daemon
	// carries on with the migration, which JobStats follows on the new connection.
	t.Run("connection lost", func(t *testing.T) {
		c2Conn := clientIDs(t, h2)
		hv2, err := conn.Open(h2.Name, h2.URI)
		if err != nil {
			t.Fatal(err)
		}
		hl.expect(t, h2.Name, true)
		var ours string
		for _, id := range clientIDs(t, h2) {
			if !slices.Contains(c2Conn, id) {
				ours = id
			}
		}
		done := migrateAsync(ctx, hv2, name, MigrationTarget{Host: h1.Name, URI: h1.TCPURI}, MigrationParams{BandwidthMiBps: 32})
		waitProgress(t, hv2, name, 1)
		virtAdmin(t, h2, "client-disconnect", "libvirtd", ours)
		err = <-done
		wantKind(t, err, KindUnavailable)
		t.Logf("Migrate after the connection was lost: %v", err)
		s := waitProgress(t, hv2, name, 1) // on the Connector's new connection
		later := waitProgress(t, hv2, name, s.DataProcessed+4*mib)
		t.Logf("the migration goes on: %d MiB sent, then %d MiB %v later",
			s.DataProcessed/mib, later.DataProcessed/mib, later.Elapsed-s.Elapsed)
		eventually(t, "the migration to end", func() bool {
			_, err := hv2.JobStats(ctx, name)
			return IsNotFound(err)
		})
		if d, err := c1.Lookup(ctx, name); err != nil || d.State != StateRunning {
			t.Errorf("destination after the migration: %+v, %v", d, err)
		}
		expectListed(t, h2, nil)
	})

	// A capped migration that would take a minute switches to post-copy: the guest runs on the
	// destination at once and the rest of its memory follows uncapped.
	// (Post-copy needs userfaultfd on the guest's memory: anonymous memory, as devfleet's guests
	// have, not ds-slow's file-backed RAM, where QEMU fails "userfault register: Invalid argument"
	// and the guest is lost: post-copy cannot fall back.) A mostly-zero 1.5 GiB guest still sends
	// a few bytes per page: seconds at 1 MiB/s.
	t.Run("post-copy", func(t *testing.T) {
		const name = "ds-post"
		if _, err := c1.DefineAndStart(ctx, devserverSpec(name, 1, 1536, 0)); err != nil {
			t.Fatal(err)
		}
		wantKind(t, hv1.StartPostCopy(ctx, name), KindFailedPrecondition) // no migration
		begin := time.Now()
		done := migrateAsync(ctx, hv1, name, to2, MigrationParams{BandwidthMiBps: 1, PostCopy: true})
		s := waitProgress(t, hv1, name, 1)
		switched := time.Now()
		if err := hv1.StartPostCopy(ctx, name); err != nil {
			t.Fatalf("StartPostCopy: %v", err)
		}
		if err := <-done; err != nil {
			t.Fatalf("Migrate after the switch to post-copy: %v", err)
		}
		t.Logf("post-copy: switched after %d KiB of %d MiB at %v (%d MiB left at the 1 MiB/s cap); Migrate returned %v after the switch",
			s.MemoryProcessed>>10, s.MemoryTotal/mib, s.Elapsed, s.MemoryRemaining/mib, time.Since(switched).Round(time.Millisecond))
		if d, err := c2.Lookup(ctx, name); err != nil || d.State != StateRunning {
			t.Errorf("destination after post-copy: %+v, %v", d, err)
		}
		if st, err := c2.JobStats(ctx, name); err == nil {
			t.Logf("destination's statistics: downtime %v, elapsed %v", st.Downtime, st.Elapsed)
		}
		expectListed(t, h1, []string{"ds-slow"}) // ds-post left it
		if took := time.Since(begin); took > 30*time.Second {
			t.Errorf("post-copy migration took %v", took)
		}
	})
}

// migrateDisk is TestLibvirtMigration's "disk" subtest: a 128 MiB volume (devfleet's own is
// whole GiB; a smaller one copies faster) with 64 MiB of random data moves h1 -> h2, uncapped;
// then back under a cap, aborted during the disk copy.
func migrateDisk(t *testing.T, ctx context.Context, h1, h2 libvirthost.Host, c1, c2 *Conn, e1, e2 <-chan Event) {
	const name, dataMiB = "ds-disk", 64
	vol := Volume{Name: name + "." + DefaultVolumeFormat, Capacity: 128 * mib, Format: DefaultVolumeFormat}
	to2, to1 := MigrationTarget{Host: h2.Name, URI: h2.TCPURI}, MigrationTarget{Host: h1.Name, URI: h1.TCPURI}
	file1 := filepath.Join(h1.Dir, "lib", "devfleet", vol.Name)
	file2 := filepath.Join(h2.Dir, "lib", "devfleet", vol.Name)

	// The guest: devfleet's definition, on a volume made by PrepareVolume (which makes the pool).
	if err := c1.PrepareVolume(ctx, vol); err != nil {
		t.Fatal(err)
	}
	xml, err := domainXML(devserverSpec(name, 1, 128, 1), c1.layout)
	if err != nil {
		t.Fatal(err)
	}
	virsh(t, h1, "define", writeFile(t, "disk.xml", xml))
	if err := c1.Start(ctx, name); err != nil {
		t.Fatal(err)
	}
	expectDomainEvents(t, e1, name, "defined/added", "started/booted")
	if vols, err := c1.DomainVolumes(ctx, name); err != nil || !slices.Equal(vols, []Volume{vol}) {
		t.Fatalf("DomainVolumes = %+v, %v; want [%+v]", vols, err, vol)
	}
	// Data the copy must carry, from 1 MiB on (a zero first sector: the firmware finds nothing
	// to boot there and goes on to the network).
	writeRandom(t, file1, 1, dataMiB)
	sum := fileSum(t, file1)

	// Refused: a local disk without CopyStorage; with it, a destination without the pool
	// ("Storage pool not found"), and one whose volume has another size (libvirt starts the
	// copy, QEMU refuses it).
	err = c1.Migrate(ctx, name, to2, MigrationParams{})
	wantKind(t, err, KindFailedPrecondition)
	t.Logf("without CopyStorage: %v", err)
	err = c1.Migrate(ctx, name, to2, MigrationParams{CopyStorage: true})
	wantKind(t, err, KindNotFound)
	t.Logf("no pool on the destination: %v", err)
	small := vol
	small.Capacity = 64 * mib
	if err := c2.PrepareVolume(ctx, small); err != nil {
		t.Fatal(err)
	}
	if err := c1.Migrate(ctx, name, to2, MigrationParams{CopyStorage: true}); err == nil {
		t.Fatal("a migration into a volume of another size succeeded")
	} else {
		t.Logf("a destination volume of another size: %v (%v)", err, KindOf(err))
	}
	if got := domainEvents(t, e2, name, 2); !slices.Equal(got, []string{"started/migrated", "crashed/failed"}) {
		t.Errorf("destination events of the failed copy: %v", got)
	}
	if d, err := c1.Lookup(ctx, name); err != nil || d.State != StateRunning {
		t.Fatalf("source after the refusals: %+v, %v", d, err)
	}
	expectListed(t, h2, nil)

	// PrepareVolume replaces the volume of the wrong size, and again does nothing.
	for range 2 {
		if err := c2.PrepareVolume(ctx, vol); err != nil {
			t.Fatal(err)
		}
	}
	if fi, err := os.Stat(file2); err != nil || fi.Size() != int64(vol.Capacity) || allocated(fi) > mib {
		t.Fatalf("prepared volume: %v, %v; want %d bytes, sparse", fi, err, vol.Capacity)
	}

	// The move, uncapped, sampled meanwhile.
	begin := time.Now()
	done := migrateAsync(ctx, c1, name, to2, MigrationParams{CopyStorage: true})
	samples, err := sampleUntil(c1, name, done, 10*time.Millisecond)
	if err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	took := time.Since(begin)
	logPhases(t, samples)
	if got := domainEvents(t, e1, name, 2); !slices.Equal(got, []string{"suspended/migrated", "stopped/migrated"}) {
		t.Errorf("source events %v", got)
	}
	if got := domainEvents(t, e2, name, 3); !slices.Equal(got, []string{"started/migrated", "defined/added", "resumed/migrated"}) {
		t.Errorf("destination events %v", got)
	}
	if d, err := c2.Lookup(ctx, name); err != nil || d.State != StateRunning {
		t.Fatalf("destination Lookup = %+v, %v", d, err)
	}
	expectListed(t, h1, nil)
	if got := fileSum(t, file2); got != sum {
		t.Errorf("the destination's volume differs from the source's")
	}
	fi, err := os.Stat(file2)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := c2.JobStats(ctx, name)
	t.Logf("live migration with a %d MiB volume (%d MiB of data): %v; the copy is %d MiB allocated on the destination; destination's statistics: %+v",
		vol.Capacity/mib, dataMiB, took.Round(time.Millisecond), allocated(fi)/mib, st)
	if allocated(fi) > (dataMiB+8)*mib {
		t.Errorf("the copy takes %d MiB on the destination: not sparse", allocated(fi)/mib)
	}
	if vols, err := c2.DomainVolumes(ctx, name); err != nil || !slices.Equal(vols, []Volume{vol}) {
		t.Errorf("destination DomainVolumes = %+v, %v", vols, err)
	}
	// The destination's volume is in use; the source's is a leftover that RemoveVolume deletes.
	wantKind(t, c2.RemoveVolume(ctx, vol.Name), KindFailedPrecondition)
	wantKind(t, c2.PrepareVolume(ctx, vol), KindFailedPrecondition)
	if got := fileSum(t, file1); got != sum {
		t.Errorf("the source's volume changed")
	}
	for range 2 {
		if err := c1.RemoveVolume(ctx, vol.Name); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(file1); !os.IsNotExist(err) {
		t.Errorf("source volume after RemoveVolume: %v", err)
	}

	// Back under a cap, aborted during the disk copy: the guest and its volume stay on h2; the
	// volume prepared on h1 is unused and goes.
	const capMiB = 32
	if err := c1.PrepareVolume(ctx, vol); err != nil {
		t.Fatal(err)
	}
	done = migrateAsync(ctx, c2, name, to1, MigrationParams{CopyStorage: true, BandwidthMiBps: capMiB})
	waitProgress(t, c2, name, 1)
	// The arriving domain (listed on h1, paused) uses the volume: it is neither removed nor
	// prepared again under it.
	wantKind(t, c1.RemoveVolume(ctx, vol.Name), KindFailedPrecondition)
	wantKind(t, c1.PrepareVolume(ctx, vol), KindFailedPrecondition)
	first := waitProgress(t, c2, name, 8*mib) // past QEMU's first burst
	time.Sleep(time.Second)
	s, err := c2.JobStats(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	rate := rateBetween(first, s)
	t.Logf("disk copy under a cap of %d MiB/s: %.1f MiB/s; %+v", capMiB, rate, s)
	if s.DiskTotal != vol.Capacity || s.DiskProcessed == 0 || s.MemoryProcessed != 0 {
		t.Errorf("JobStats during the disk copy: %+v", s)
	}
	if rate > capMiB*1.25 || rate < capMiB*0.6 {
		t.Errorf("disk copy at %.1f MiB/s under a cap of %d", rate, capMiB)
	}
	if err := c2.AbortJob(ctx, name); err != nil {
		t.Fatal(err)
	}
	wantKind(t, <-done, KindAborted)
	if d, err := c2.Lookup(ctx, name); err != nil || d.State != StateRunning {
		t.Fatalf("source after the abort: %+v, %v", d, err)
	}
	expectListed(t, h1, nil)
	if got := fileSum(t, file2); got != sum {
		t.Errorf("the abort changed the source's volume")
	}
	if err := c1.RemoveVolume(ctx, vol.Name); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(file1); !os.IsNotExist(err) {
		t.Errorf("prepared volume after RemoveVolume: %v", err)
	}
	if got := domainEvents(t, e1, name, 2); !slices.Equal(got, []string{"started/migrated", "crashed/failed"}) {
		t.Errorf("events of the aborted copy's destination: %v", got)
	}
	if err := c2.Destroy(ctx, name); err != nil {
		t.Fatal(err)
	}
	if err := c2.Undefine(ctx, name); err != nil {
		t.Fatal(err)
	}
	// The abort left no trace in the source's events: only the destroy's and undefine's follow.
	for got := []string{}; !slices.Contains(got, "undefined/removed"); {
		ev := domainEvents(t, e2, name, 1)[0]
		if strings.Contains(ev, "migrated") || strings.HasPrefix(ev, "crashed") {
			t.Errorf("source event %s after the aborted migration", ev)
		}
		got = append(got, ev)
	}
	if _, err := os.Stat(file2); !os.IsNotExist(err) {
		t.Errorf("volume after Undefine: %v", err)
	}
}

// sampleUntil samples JobStats every interval until done delivers Migrate's answer.
func sampleUntil(hv Hypervisor, name string, done <-chan error, interval time.Duration) ([]JobStats, error) {
	var samples []JobStats
	for {
		select {
		case err := <-done:
			return samples, err
		case <-time.After(interval):
		}
		if s, err := hv.JobStats(context.Background(), name); err == nil && s.Type.Active() {
			samples = append(samples, s)
		}
	}
}

// logPhases logs the samples of a migration that copied storage where its phases change.
func logPhases(t *testing.T, samples []JobStats) {
	t.Helper()
	for i, s := range samples {
		if i == 0 || i == len(samples)-1 || (s.MemoryTotal > 0) != (samples[i-1].MemoryTotal > 0) ||
			(s.DiskRemaining == 0) != (samples[i-1].DiskRemaining == 0) {
			t.Logf("sample %d/%d: %+v", i+1, len(samples), s)
		}
	}
}

// writeRandom writes n MiB of random data into a file from offset MiB on.
func writeRandom(t *testing.T, path string, offset, n int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, mib)
	for i := range n {
		rand.Read(buf)
		if _, err := f.WriteAt(buf, (offset+i)*mib); err != nil {
			t.Fatal(err)
		}
	}
}

// fileSum is the SHA-256 of a file's content.
func fileSum(t *testing.T, path string) [sha256.Size]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// allocated is how much of the host's disk a file takes.
func allocated(fi os.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512
	}
	return fi.Size()
}

// migrateAsync runs Migrate in the background.
func migrateAsync(ctx context.Context, hv Hypervisor, name string, dest MigrationTarget, p MigrationParams) <-chan error {
	done := make(chan error, 1)
	go func() { done <- hv.Migrate(ctx, name, dest, p) }()
	return done
}

// waitProgress polls JobStats until the migration runs and has sent at least min bytes.
func waitProgress(t *testing.T, hv Hypervisor, name string, min uint64) JobStats {
	t.Helper()
	var last JobStats
	var lastErr error
	deadline := time.Now().Add(waitTimeout)
	for time.Now().Before(deadline) {
		s, err := hv.JobStats(context.Background(), name)
		if err == nil && s.Type.Active() && s.DataProcessed >= min {
			return s
		}
		last, lastErr = s, err
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no migration progress: last JobStats %+v, %v", last, lastErr)
	return JobStats{}
}

// rateBetween is the transfer rate between two samples, in MiB/s.
func rateBetween(a, b JobStats) float64 {
	return float64(b.DataProcessed-a.DataProcessed) / mib / (b.Elapsed - a.Elapsed).Seconds()
}

// domainEvents reads the next n events of the domain name ("type/detail"), skipping others'.
func domainEvents(t *testing.T, ch <-chan Event, name string, n int) []string {
	t.Helper()
	var got []string
	for len(got) < n {
		ev := next(t, ch)
		if ev.Domain == name {
			got = append(got, string(ev.Type)+"/"+ev.Detail)
		}
	}
	return got
}

// expectListed checks the domains `virsh list --all` shows on a host.
func expectListed(t *testing.T, h libvirthost.Host, want []string) {
	t.Helper()
	got := strings.Fields(virsh(t, h, "list", "--all", "--name"))
	if !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
		t.Errorf("virsh list --all on %s: %v, want %v", h.Name, got, want)
	}
}

// fillRAM writes n MiB of random data into a running guest's file-backed RAM from offset MiB
// on (the firmware lives at the bottom and the top of the guest's memory), so that the
// migration has that much to send.
func fillRAM(t testing.TB, h libvirthost.Host, name string, offset, n int64) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(h.Dir, "lib", "qemu", "ram", "*-"+name, "*"))
	if len(files) != 1 {
		t.Fatalf("RAM file of %s: %v", name, files)
	}
	f, err := os.OpenFile(files[0], os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, mib)
	for i := range n {
		rand.Read(buf)
		if _, err := f.WriteAt(buf, (offset+i)*mib); err != nil {
			t.Fatal(errors.Join(errors.New("write the guest's RAM"), err))
		}
	}
}
