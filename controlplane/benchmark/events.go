package benchmark

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/devfleet/devfleet/controlplane/eventlog"
	"github.com/devfleet/devfleet/controlplane/feedwatch"
	"github.com/devfleet/devfleet/controlplane/raftnode"
	"github.com/devfleet/devfleet/controlplane/state"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// The event feed's fan-out targets (issue 8).
const (
	TargetDelayP99 = 50 * time.Millisecond
	TargetLossPct  = 10.0
)

// EventsOptions configures RunEvents.
type EventsOptions struct {
	Dir string
	// Rate is the writes/s offered, open loop (0: closed loop, Clients writing back to back).
	Rate int
	// Clients is how many writes may be in flight at once.
	Clients int
	// Watchers is how many Watch streams follow the feed, spread over the three nodes.
	Watchers int
	// Topics filter the watchers' streams (empty: every event).
	Topics []string
	// Duration of each of the two measured runs.
	Duration time.Duration
	// CPUProfile, if set, is a file for a CPU profile of the run with watchers (pprof format).
	CPUProfile string
	// FullDecode: the watchers decode every event whole, as a client that reads the objects
	// would. By default they decode what a watcher needs to follow the feed and check its
	// order (index, n, topic, key, deleted), not the stamp nor the object: in a deployment
	// that work is the clients', but here it shares the nodes' cores.
	FullDecode bool
	// NoBatch: the watchers ask for one event per response. By default they ask for batches
	// (WatchRequest.batch), as feedwatch does.
	NoBatch bool
}

// DelayStats are the commit-to-delivery delays of the events that watchers received.
type DelayStats struct {
	Events int64         `json:"events"`
	P50    time.Duration `json:"p50_ns"`
	P99    time.Duration `json:"p99_ns"`
	P999   time.Duration `json:"p999_ns"`
	Max    time.Duration `json:"max_ns"`
}

func (d DelayStats) String() string {
	return fmt.Sprintf("%9d events  p50 %7.2f ms  p99 %7.2f ms  p99.9 %7.2f ms  max %7.2f ms", d.Events, ms(d.P50), ms(d.P99), ms(d.P999), ms(d.Max))
}

// EventsReport is what RunEvents measured.
type EventsReport struct {
	Rate     int     `json:"rate"`
	Watchers int     `json:"watchers"`
	Without  Result  `json:"without_watchers"`
	With     Result  `json:"with_watchers"`
	LossPct  float64 `json:"throughput_loss_pct"`
	// MissedWithout, MissedWith: writes the open loop could not start on time because every
	// client was busy for longer than the backlog allows (the offered rate was not met).
	MissedWithout int `json:"missed_without"`
	MissedWith    int `json:"missed_with"`
	// Delay over every watcher; Leader and Followers split it by where the watcher was.
	Delay     DelayStats `json:"delay"`
	Leader    DelayStats `json:"delay_leader"`
	Followers DelayStats `json:"delay_followers"`
	// PerWatcher is the events each watcher received from the measured run (all the same when
	// none missed one).
	PerWatcher int64 `json:"events_per_watcher"`
	// Complete: every watcher ended at the last event, having received the same events.
	Complete bool `json:"complete"`
	// Batch: the watchers asked for batches; PerResponse is the events they received per
	// response (heartbeats included), over the whole watch.
	Batch       bool    `json:"batch"`
	PerResponse float64 `json:"events_per_response"`
	// Cutoffs: streams a node cut off because the watcher fell behind (it resumed).
	Cutoffs    int64 `json:"cutoffs"`
	Duplicates int64 `json:"duplicates"`
	// Early: events a watcher received before the leader's own apply recorded its commit time
	// (a follower applied first); counted as a zero delay.
	Early   int64 `json:"early"`
	DelayOK bool  `json:"delay_ok"`
	LossOK  bool  `json:"loss_ok"`
	Pass    bool  `json:"pass"`
}

// RunEvents measures the event feed's fan-out on a 3-node loopback cluster: the write load runs
// once without watchers and once with o.Watchers Watch streams spread over the nodes; it reports
// the write throughput of both, and the delay from each entry's commit (the leader's FSM
// applying it: when its write can be acknowledged) to each watcher receiving its events.
func RunEvents(ctx context.Context, o EventsOptions, out io.Writer) (EventsReport, error) {
	rep := EventsReport{Rate: o.Rate, Watchers: o.Watchers, Batch: !o.NoBatch}
	c, err := StartCluster(o.Dir+"/devfleet", raftnode.Config{})
	if err != nil {
		return rep, err
	}
	defer c.Close()
	if err := c.Seed(ctx); err != nil {
		return rep, err
	}
	leader := c.Leader()
	write, closeConns, err := devserverCreates(leader.GRPCAddr(), o.Clients)
	if err != nil {
		return rep, err
	}
	defer closeConns()
	load := func(name string, d time.Duration) (Result, int) {
		if o.Rate <= 0 {
			return closedLoop(ctx, name, o.Clients, d, write), 0
		}
		return openLoop(ctx, name, o.Rate, o.Clients, d, write)
	}
	load("warm-up", time.Second)

	how := fmt.Sprintf("open loop at %d writes/s, at most %d in flight", o.Rate, o.Clients)
	if o.Rate <= 0 {
		how = fmt.Sprintf("closed loop, %d clients", o.Clients)
	}
	fmt.Fprintf(out, "events: 3 nodes on loopback, CreateDevserver (host given) to the leader, %s, %s a run\n", how, o.Duration)
	rep.Without, rep.MissedWithout = load("no watchers", o.Duration)
	fmt.Fprintln(out, row(rep.Without, rep.MissedWithout))

	// Commit times, from the leader's store: the observer hears each entry's transaction right
	// after it is applied, on the FSM's goroutine.
	commits := &commitTimes{base: time.Now()}
	leader.Node().FSM().Store().Observe(commits)

	// Each watcher's connection notes when each response is received: the delay of every event
	// of a batch is taken then.
	dial := func(b *benchWatcher) func(addr string) (*grpc.ClientConn, error) {
		return func(addr string) (*grpc.ClientConn, error) {
			opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithStreamInterceptor(b.intercept)}
			if !o.FullDecode {
				opts = append(opts, grpc.WithDefaultCallOptions(grpc.ForceCodecV2(newPositionCodec())))
			}
			return grpc.NewClient(addr, opts...)
		}
	}
	ws := make([]*benchWatcher, o.Watchers)
	wctx, stopWatchers := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		stopWatchers()
		wg.Wait()
	}()
	for i := range ws {
		node := c.nodes[i%len(c.nodes)]
		ws[i] = &benchWatcher{leader: node == leader, commits: commits}
		fw, err := feedwatch.New(feedwatch.Options{
			Addrs: []string{node.GRPCAddr()}, NoDiscover: true, Request: &v1.WatchRequest{Topics: o.Topics}, Dial: dial(ws[i]), NoBatch: o.NoBatch,
		})
		if err != nil {
			return rep, err
		}
		ws[i].w = fw
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = fw.Run(wctx, ws[i].receive)
		}()
	}
	// Every stream is live: each received something of a short load.
	warm, warmCancel := context.WithCancel(ctx)
	warmed := make(chan struct{})
	go func() {
		defer close(warmed)
		for warm.Err() == nil {
			load("warm-up", 200*time.Millisecond)
		}
	}()
	err = waitFor(ctx, 60*time.Second, func() bool {
		for _, w := range ws {
			if w.received.Load() == 0 {
				return false
			}
		}
		return true
	})
	warmCancel()
	<-warmed
	if err != nil {
		return rep, fmt.Errorf("not every watcher received an event within 60s: %w", err)
	}

	commits.from.Store(int64(time.Since(commits.base)))
	stopProfile, err := startCPUProfile(o.CPUProfile)
	if err != nil {
		return rep, err
	}
	rep.With, rep.MissedWith = load(fmt.Sprintf("%d watchers", o.Watchers), o.Duration)
	if err := stopProfile(); err != nil {
		return rep, err
	}
	fmt.Fprintln(out, row(rep.With, rep.MissedWith))
	// Let every watcher reach the last event (of its topics) written, then stop them. The
	// leader's feed writes its history behind the applies: wait for it to hold the last entry
	// applied with changes (one of a table without a topic makes no event: bounded).
	_ = waitFor(ctx, 10*time.Second, func() bool {
		idx, _ := leader.Events().Last()
		return idx >= commits.last.Load()
	})
	idx, n := leader.Events().Last()
	last := feedwatch.Position{Index: idx, N: n}
	if len(o.Topics) > 0 {
		if last, err = lastMatching(leader.Events(), ws, last, eventlog.Filter{Topics: o.Topics}); err != nil {
			return rep, err
		}
	}
	caughtUp := waitFor(ctx, 60*time.Second, func() bool {
		for _, w := range ws {
			if p := w.w.Position(); p.Index < last.Index || (p.Index == last.Index && p.N < last.N) {
				return false
			}
		}
		return true
	}) == nil
	stopWatchers()
	wg.Wait()

	var all, lead, follow []int32
	var received, responses int64
	rep.Complete = caughtUp
	for i, w := range ws {
		received += w.received.Load()
		responses += w.responses
		w.resolve()
		st := w.w.Stats()
		rep.Cutoffs += st.Cutoffs
		rep.Duplicates += st.Duplicates
		rep.Early += w.early
		all = append(all, w.delays...)
		if w.leader {
			lead = append(lead, w.delays...)
		} else {
			follow = append(follow, w.delays...)
		}
		if i == 0 {
			rep.PerWatcher = int64(len(w.delays))
		} else if int64(len(w.delays)) != rep.PerWatcher || w.w.Position() != ws[0].w.Position() {
			rep.Complete = false
		}
	}
	rep.Delay, rep.Leader, rep.Followers = delayStats(all), delayStats(lead), delayStats(follow)
	if responses > 0 {
		rep.PerResponse = float64(received) / float64(responses)
	}
	if rep.Without.PerSec > 0 {
		rep.LossPct = max(0, 100*(1-rep.With.PerSec/rep.Without.PerSec))
	}
	rep.DelayOK = rep.Delay.Events > 0 && rep.Delay.P99 <= TargetDelayP99
	rep.LossOK = rep.LossPct <= TargetLossPct
	rep.Pass = rep.DelayOK && rep.LossOK && rep.Complete

	perWrite := 0.0
	if rep.With.Writes > 0 {
		perWrite = float64(rep.PerWatcher) / float64(rep.With.Writes)
	}
	filter := "every topic"
	if len(o.Topics) > 0 {
		filter = "topics " + strings.Join(o.Topics, ",")
	}
	decode := "index, n, topic, key of each event"
	if o.FullDecode {
		decode = "each event whole"
	}
	batching := fmt.Sprintf("batches asked: %.1f events per response", rep.PerResponse)
	if o.NoBatch {
		batching = "no batches"
	}
	fmt.Fprintf(out, "delivery delay, leader's commit (FSM apply) to receipt by a watcher (gRPC Watch, %s, decoding %s, %s), %d watchers over 3 nodes:\n", filter, decode, batching, o.Watchers)
	fmt.Fprintf(out, "  all        %s\n", rep.Delay)
	fmt.Fprintf(out, "  on leader  %s\n", rep.Leader)
	fmt.Fprintf(out, "  followers  %s\n", rep.Followers)
	fmt.Fprintf(out, "  %d events per watcher (%.2f per write); every watcher got them all, up to %s: %v; cut off as slow %d times; duplicates %d; early %d\n",
		rep.PerWatcher, perWrite, last, yesNo(rep.Complete), rep.Cutoffs, rep.Duplicates, rep.Early)
	fmt.Fprintf(out, "write throughput: %.0f/s without watchers, %.0f/s with: loss %.1f%%\n", rep.Without.PerSec, rep.With.PerSec, rep.LossPct)
	fmt.Fprintf(out, "target p99 delay <= %s: %s; target loss <= %.0f%%: %s; result: %s\n",
		TargetDelayP99, passFail(rep.DelayOK), TargetLossPct, passFail(rep.LossOK), passFail(rep.Pass))
	return rep, nil
}

// lastMatching is the last event matching f at or before last, read from the earliest watcher's
// position on.
func lastMatching(l *eventlog.Log, ws []*benchWatcher, last feedwatch.Position, f eventlog.Filter) (feedwatch.Position, error) {
	from := last
	for _, w := range ws {
		if p := w.w.Position(); p.Index < from.Index || (p.Index == from.Index && p.N < from.N) {
			from = p
		}
	}
	found := from
	pos := eventlog.Position{Index: from.Index, N: from.N}
	for {
		evs, err := l.Read(pos, f, 4096)
		if err != nil {
			return found, err
		}
		for _, e := range evs {
			if e.GetIndex() > last.Index || (e.GetIndex() == last.Index && e.GetN() > last.N) {
				return found, nil
			}
			found = feedwatch.Position{Index: e.GetIndex(), N: e.GetN()}
		}
		if len(evs) < 4096 {
			return found, nil
		}
		pos = eventlog.Position{Index: found.Index, N: found.N}
	}
}

// startCPUProfile starts a CPU profile into path (nothing if path is empty) and returns what
// stops it and closes the file.
func startCPUProfile(path string) (func() error, error) {
	if path == "" {
		return func() error { return nil }, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, err
	}
	return func() error {
		pprof.StopCPUProfile()
		return f.Close()
	}, nil
}

func row(r Result, missed int) string {
	if missed > 0 {
		return fmt.Sprintf("%s  missed %d", r, missed)
	}
	return r.String()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func passFail(b bool) string {
	if b {
		return "PASS"
	}
	return "FAIL"
}

func waitFor(ctx context.Context, d time.Duration, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

// commitTimes records when the leader applied each raft index, as nanoseconds since base (a
// monotonic clock shared with the watchers), lock-free for the readers.
type commitTimes struct {
	base time.Time
	// from: only events committed from this time on are measured (ns since base).
	from   atomic.Int64
	first  atomic.Uint64 // the first index recorded
	last   atomic.Uint64 // the last
	chunks [1 << 12]atomic.Pointer[[1 << 16]atomic.Int64]
}

// Reset implements state.Observer.
func (c *commitTimes) Reset(*state.View) {}

// Changed implements state.Observer: one call per raft entry, right after it is applied.
func (c *commitTimes) Changed(index uint64, _ []state.Change) {
	now := int64(time.Since(c.base))
	if c.first.Load() == 0 {
		c.first.Store(index)
	}
	c.last.Store(index)
	i := index - c.first.Load()
	if i>>16 >= uint64(len(c.chunks)) {
		return
	}
	ch := c.chunks[i>>16].Load()
	if ch == nil {
		ch = new([1 << 16]atomic.Int64)
		c.chunks[i>>16].Store(ch)
	}
	ch[i&(1<<16-1)].CompareAndSwap(0, now)
}

// at is when index was committed (ns since base), or false if not recorded (yet).
func (c *commitTimes) at(index uint64) (int64, bool) {
	first := c.first.Load()
	if first == 0 || index < first {
		return 0, false
	}
	i := index - first
	if i>>16 >= uint64(len(c.chunks)) {
		return 0, false
	}
	ch := c.chunks[i>>16].Load()
	if ch == nil {
		return 0, false
	}
	t := ch[i&(1<<16-1)].Load()
	return t, t != 0
}

// benchWatcher records the delay of every event it receives, from the receipt of the response
// that carried it.
type benchWatcher struct {
	w        *feedwatch.Watcher
	leader   bool
	commits  *commitTimes
	received atomic.Int64
	// receivedAt: when the last response was received (ns since base), set by the stream on
	// feedwatch's goroutine, which then gives its events to receive; responses counts them.
	receivedAt int64
	responses  int64
	// delays in µs of the measured events; pending: received before the leader recorded the
	// commit (index, receipt ns since base).
	delays  []int32
	pending [][2]int64
	early   int64
}

// intercept notes when each response of the watcher's streams is received.
func (b *benchWatcher) intercept(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	s, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		return nil, err
	}
	return receiptStream{ClientStream: s, b: b}, nil
}

type receiptStream struct {
	grpc.ClientStream
	b *benchWatcher
}

func (s receiptStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err == nil {
		s.b.receivedAt = int64(time.Since(s.b.commits.base))
		s.b.responses++
	}
	return err
}

func (b *benchWatcher) receive(e *v1.Event) error {
	now := b.receivedAt
	b.received.Add(1)
	t, ok := b.commits.at(e.GetIndex())
	switch {
	case !ok:
		b.pending = append(b.pending, [2]int64{int64(e.GetIndex()), now})
	case t >= b.commits.from.Load() && b.commits.from.Load() > 0:
		b.delays = append(b.delays, int32((now-t)/1000))
	}
	return nil
}

// resolve measures the events received before their commit time was known; call it once the
// watcher stopped.
func (b *benchWatcher) resolve() {
	from := b.commits.from.Load()
	for _, p := range b.pending {
		t, ok := b.commits.at(uint64(p[0]))
		if !ok || t < from || from == 0 {
			continue // before the measurement (or the observer)
		}
		d := max(0, p[1]-t)
		if p[1] < t {
			b.early++
		}
		b.delays = append(b.delays, int32(d/1000))
	}
	b.pending = nil
}

func delayStats(us []int32) DelayStats {
	if len(us) == 0 {
		return DelayStats{}
	}
	s := slices.Clone(us)
	slices.Sort(s)
	q := func(p float64) time.Duration {
		return time.Duration(s[min(len(s)-1, int(p*float64(len(s))))]) * time.Microsecond
	}
	return DelayStats{Events: int64(len(s)), P50: q(0.5), P99: q(0.99), P999: q(0.999), Max: time.Duration(s[len(s)-1]) * time.Microsecond}
}

// openLoop offers rate writes a second for d, whatever the previous ones are doing, to at most
// clients concurrent calls, and measures each from the time it was due (so that a slow system's
// queueing counts). A write that cannot even be queued (a quarter-second backlog of due writes
// is waiting for a free client) is missed: counted, not made. Writes still queued at the end
// are neither made nor counted.
func openLoop(ctx context.Context, name string, rate, clients int, d time.Duration, write func(ctx context.Context, client, seq int) error) (Result, int) {
	var lat Latencies
	var errs atomic.Int64
	due := make(chan time.Time, max(rate/4, clients))
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := 0; ; seq++ {
				var t time.Time
				select {
				case <-ctx.Done():
					return
				case t = <-due:
				}
				if err := write(context.WithoutCancel(ctx), c, seq); err != nil {
					errs.Add(1)
					continue
				}
				lat.Add(time.Since(t))
			}
		}()
	}
	missed, offered := 0, 0
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case now := <-tick.C:
			for n := int(now.Sub(start).Seconds() * float64(rate)); offered < n; offered++ {
				at := start.Add(time.Duration(float64(offered) / float64(rate) * float64(time.Second)))
				select {
				case due <- at:
				default:
					missed++
				}
			}
		}
	}
	wg.Wait()
	return lat.Summarize(name, clients, int(errs.Load()), time.Since(start)), missed
}

var _ state.Observer = (*commitTimes)(nil)
