package benchmark

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/devfleet/devfleet/controlplane/fsm"
	"github.com/devfleet/devfleet/controlplane/state"
	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// ScaleOptions sizes the fleet of RunScale.
type ScaleOptions struct {
	Dir        string
	Hosts      int
	Devservers int
}

// ScaleReport is what RunScale measured.
type ScaleReport struct {
	Hosts         int           `json:"hosts"`
	Devservers    int           `json:"devservers"`
	LoadTime      time.Duration `json:"load_ns"`
	SnapshotTime  time.Duration `json:"snapshot_ns"`
	SnapshotBytes int64         `json:"snapshot_bytes"`
	RestoreTime   time.Duration `json:"restore_ns"`
	RSSLoaded     int64         `json:"rss_loaded_bytes"`
	RSSRestored   int64         `json:"rss_restored_bytes"`
}

// RunScale fills a state machine with a large fleet through its commands (in raft-entry sized
// batches), then measures an FSM snapshot to a file, a restore from it into a fresh state
// machine, and the process's resident memory at both points.
func RunScale(o ScaleOptions, out io.Writer) (ScaleReport, error) {
	rep := ScaleReport{Hosts: o.Hosts, Devservers: o.Devservers}
	log := slog.New(slog.DiscardHandler)
	start := time.Now()
	f, err := BuildFleet(o)
	if err != nil {
		return rep, err
	}
	rep.LoadTime = time.Since(start)
	debug.FreeOSMemory()
	rep.RSSLoaded = rss()
	fmt.Fprintf(out, "loaded %d hosts and %d devservers through the FSM in %s; RSS %d MiB\n",
		o.Hosts, o.Devservers, rep.LoadTime.Round(time.Millisecond), rep.RSSLoaded>>20)

	path := filepath.Join(o.Dir, "scale.snap")
	file, err := os.Create(path)
	if err != nil {
		return rep, err
	}
	defer os.Remove(path)
	start = time.Now()
	snap, err := f.Snapshot()
	if err != nil {
		return rep, err
	}
	sink := &fileSink{File: file}
	if err := snap.Persist(sink); err != nil {
		return rep, err
	}
	rep.SnapshotTime = time.Since(start)
	st, err := os.Stat(path)
	if err != nil {
		return rep, err
	}
	rep.SnapshotBytes = st.Size()
	fmt.Fprintf(out, "snapshot: %s, %d MiB (fsync'd to %s)\n", rep.SnapshotTime.Round(time.Millisecond), rep.SnapshotBytes>>20, o.Dir)

	f = nil // drop the loaded state: a restarting node holds only the restored one
	debug.FreeOSMemory()
	start = time.Now()
	rc, err := os.Open(path)
	if err != nil {
		return rep, err
	}
	restored := fsm.New(state.New(), log, nil)
	if err := restored.Restore(rc); err != nil {
		return rep, err
	}
	rep.RestoreTime = time.Since(start)
	debug.FreeOSMemory()
	rep.RSSRestored = rss()
	v := restored.Store().View()
	hosts, _ := v.ListHosts(state.HostFilter{}, state.Page{Size: 1})
	if len(hosts) == 0 {
		return rep, fmt.Errorf("restore lost the hosts")
	}
	fmt.Fprintf(out, "restore: %s; RSS after restore %d MiB\n", rep.RestoreTime.Round(time.Millisecond), rep.RSSRestored>>20)
	return rep, nil
}

func seedScale(o ScaleOptions, add func(*fsmv1.Command) error) error {
	const regions, sitesPerRegion = 5, 4
	for r := 0; r < regions; r++ {
		if err := add(&fsmv1.Command{Op: &fsmv1.Command_CreateRegion{CreateRegion: &fsmv1.CreateRegion{Region: &v1.Region{Name: fmt.Sprintf("region%d", r)}}}}); err != nil {
			return err
		}
		for s := 0; s < sitesPerRegion; s++ {
			if err := add(&fsmv1.Command{Op: &fsmv1.Command_CreateSite{CreateSite: &fsmv1.CreateSite{Site: &v1.Site{Name: fmt.Sprintf("r%ds%d", r, s), Region: fmt.Sprintf("region%d", r)}}}}); err != nil {
				return err
			}
		}
	}
	if err := add(&fsmv1.Command{Op: &fsmv1.Command_CreateFlavor{CreateFlavor: &fsmv1.CreateFlavor{Flavor: &v1.Flavor{
		Name: "medium", Resources: &v1.Resources{Vcpus: 8, MemoryMib: 32768, DiskGib: 250}}}}}); err != nil {
		return err
	}
	hostName := func(i int) string { return fmt.Sprintf("host%05d", i) }
	for i := 0; i < o.Hosts; i++ {
		site := i % (regions * sitesPerRegion)
		if err := add(&fsmv1.Command{Op: &fsmv1.Command_CreateHost{CreateHost: &fsmv1.CreateHost{Host: &v1.Host{
			Name: hostName(i), Site: fmt.Sprintf("r%ds%d", site/sitesPerRegion, site%sitesPerRegion),
			Capacity: &v1.Resources{Vcpus: 128, MemoryMib: 1 << 20, DiskGib: 8000}, Overcommit: &v1.Overcommit{Cpu: 2},
			Labels: map[string]string{"rack": fmt.Sprintf("rack%d", i%40), "gen": "v3"},
		}}}}); err != nil {
			return err
		}
	}
	for i := 0; i < o.Devservers; i++ {
		h := i % max(o.Hosts, 1)
		site := h % (regions * sitesPerRegion)
		d := &v1.Devserver{
			Name: fmt.Sprintf("dev%06d", i), Id: fmt.Sprintf("00000000-0000-4000-8000-%012d", i),
			Owner: fmt.Sprintf("user%d", i%5000), Flavor: "medium", Region: fmt.Sprintf("region%d", site/sitesPerRegion),
			Lifespan: v1.Lifespan_LIFESPAN_PERMANENT,
		}
		if o.Hosts > 0 {
			d.Host = hostName(h)
		}
		if err := add(&fsmv1.Command{Op: &fsmv1.Command_CreateDevserver{CreateDevserver: &fsmv1.CreateDevserver{Devserver: d}}}); err != nil {
			return err
		}
	}
	return nil
}

// BuildFleet fills a state machine with a generated fleet through its commands, in raft-entry
// sized batches: 5 regions of 4 sites, o.Hosts hosts (128 vCPUs at 2x overcommit, 1 TiB) and
// o.Devservers devservers of flavor medium spread evenly over them.
func BuildFleet(o ScaleOptions) (*fsm.FSM, error) {
	f := fsm.New(state.New(), slog.New(slog.DiscardHandler), nil)
	b := &batcher{f: f}
	if err := seedScale(o, b.add); err != nil {
		return nil, err
	}
	return f, b.flush()
}

// batcher applies commands to a state machine directly, in raft-entry sized batches of 256, as
// a leader's group commit would: building a large fleet without a raft log.
type batcher struct {
	f       *fsm.FSM
	index   uint64 // of the last entry applied; 0 before the first (then the state's latest)
	pending []*fsmv1.Command
}

// add stamps c and queues it, applying the batch once full.
func (b *batcher) add(c *fsmv1.Command) error {
	c.TimeUnixNano = time.Now().UnixNano()
	b.pending = append(b.pending, c)
	if len(b.pending) == 256 {
		return b.flush()
	}
	return nil
}

// flush applies what is queued as the entry after the state's latest.
func (b *batcher) flush() error {
	if len(b.pending) == 0 {
		return nil
	}
	data, err := fsm.EncodeBatch(b.pending)
	if err != nil {
		return err
	}
	if b.index == 0 {
		b.index = b.f.Store().View().LatestIndex()
	}
	b.index++
	for _, r := range b.f.Apply(rawLog(b.index, data)).([]fsm.Result) {
		if r.Err != nil {
			return r.Err
		}
	}
	b.pending = b.pending[:0]
	return nil
}

// rss is the process's resident set size from /proc/self/status (0 where unavailable).
func rss() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// fileSink is a raft.SnapshotSink over a file, fsync'd on Close like raft's file snapshots.
type fileSink struct{ *os.File }

func (s *fileSink) ID() string    { return s.Name() }
func (s *fileSink) Cancel() error { return s.File.Close() }
func (s *fileSink) Close() error {
	if err := s.Sync(); err != nil {
		return err
	}
	return s.File.Close()
}
