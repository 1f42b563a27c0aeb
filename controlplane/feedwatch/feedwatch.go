// Package feedwatch follows the fleet's event feed (EventService.Watch) from a cluster rather
// than from one node. Every node keeps the whole history, numbered the same way (raft index, and
// place n in the entry), so a position seen on one node is valid on every other. A Watcher
// remembers the last event it delivered and, when its stream ends (the node died or stopped, the
// network dropped, the node cut it off as a slow consumer), opens a new one after that event, on
// the same node or another: its consumer sees every event once, in order, whichever nodes serve
// it.
//
// The nodes it may use are the addresses it is given and, unless told not to, the gRPC addresses
// the cluster's members announced (ClusterService.ListMembers, answered locally), learned from
// each node it reaches. A stream that ends for a node's reason (Unavailable, a reset, the end of
// the stream, silence longer than three heartbeats) moves it to the next node; a round of nodes
// that all fail is followed by a short pause, and after Grace of failures in a row it gives up.
// A position older than a node's history (OutOfRange: a node installed a snapshot, or retention
// deleted it) is tried on the other nodes before it is reported.
//
// It asks the nodes for batches (WatchRequest.batch: the events waiting for a stream come
// several per response, which costs a node and the Watcher less per event), unless
// Options.NoBatch; its consumer takes the events one at a time either way.
package feedwatch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// Defaults.
const (
	// DefaultGrace is how long every node may fail in a row before Run gives up.
	DefaultGrace = 30 * time.Second
	// serverHeartbeat is the server's default heartbeat interval (api.defaultHeartbeat).
	serverHeartbeat = 10 * time.Second
	// callTimeout bounds the unary calls (GetStatus, ListMembers) a Watcher makes.
	callTimeout = 5 * time.Second
	// maxPause is the longest pause between two rounds of failing nodes.
	maxPause = 2 * time.Second
	// maxFruitlessCuts is how many slow-consumer cut-offs in a row, without a single event or
	// heartbeat between them, Run takes before it reports the error: such a cut-off is not
	// about the pace of the consumer.
	maxFruitlessCuts = 3
)

// Position is the last event delivered: resume after it.
type Position struct {
	Index uint64
	N     uint32
}

func (p Position) less(q Position) bool {
	return p.Index < q.Index || (p.Index == q.Index && p.N < q.N)
}

func (p Position) String() string { return fmt.Sprintf("%d/%d", p.Index, p.N) }

// Options configure a Watcher.
type Options struct {
	// Addrs are gRPC addresses of cluster nodes, tried in order. At least one.
	Addrs []string
	// Request says what to watch: topics, keys, where to start (after_index/after_n, since, or
	// neither: only new events) and the heartbeat. Nil: every event from now on. It is copied.
	Request *v1.WatchRequest
	// NoDiscover keeps the Watcher on Addrs: it does not learn the other members' addresses.
	NoDiscover bool
	// NoBatch asks the nodes for one event per response. By default the Watcher asks for
	// batches (WatchRequest.batch: a node sends the events waiting for the stream several per
	// response), which only changes how they travel: fn still takes them one at a time.
	NoBatch bool
	// Dial connects to a node (default: grpc.NewClient in plaintext). It should not touch the
	// network: gRPC connects on the first call.
	Dial func(addr string) (*grpc.ClientConn, error)
	// Grace is how long every node may fail in a row before Run gives up (default
	// DefaultGrace).
	Grace time.Duration
	// Idle is how long a stream may stay silent (no event, no heartbeat) before the node is
	// taken for dead (default: three heartbeats and 5 s).
	Idle time.Duration
	// Logf, if set, hears where the watch resumes when it leaves a node (the first failure of a
	// streak; the rest is told by Run's error if no node comes back) or is cut off.
	Logf func(format string, args ...any)
}

// Stats count what a Watcher went through.
type Stats struct {
	// Events delivered to the consumer.
	Events int64
	// Failovers: streams that ended for a node's reason (the watch moved to the next node).
	Failovers int64
	// Cutoffs: streams the node cut off because the consumer fell behind (resumed there).
	Cutoffs int64
	// Duplicates: events at or before the position, dropped (a node that breaks the protocol;
	// never expected).
	Duplicates int64
}

// Watcher follows the feed across nodes. Run it once.
type Watcher struct {
	opts  Options
	seeds []string

	mu    sync.Mutex
	addrs []string // seeds, then the members' addresses last learned
	conns map[string]*grpc.ClientConn
	pos   Position
	addr  string // the node of the current (or last) stream
	stats Stats

	wg sync.WaitGroup // discoveries
}

// New checks the options and returns a Watcher; it does not touch the network.
func New(o Options) (*Watcher, error) {
	var seeds []string
	for _, a := range o.Addrs {
		if a != "" && !slices.Contains(seeds, a) {
			seeds = append(seeds, a)
		}
	}
	if len(seeds) == 0 {
		return nil, errors.New("feedwatch: no node address")
	}
	if o.Request == nil {
		o.Request = &v1.WatchRequest{}
	} else {
		o.Request = proto.Clone(o.Request).(*v1.WatchRequest)
	}
	o.Request.Batch = !o.NoBatch
	if o.Grace <= 0 {
		o.Grace = DefaultGrace
	}
	if o.Idle <= 0 {
		hb := serverHeartbeat
		if h := o.Request.GetHeartbeat(); h != nil && h.AsDuration() > 0 {
			hb = h.AsDuration()
		}
		o.Idle = 3*hb + 5*time.Second
	}
	if o.Dial == nil {
		o.Dial = func(addr string) (*grpc.ClientConn, error) {
			return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		}
	}
	w := &Watcher{opts: o, seeds: seeds, addrs: slices.Clone(seeds), conns: map[string]*grpc.ClientConn{}, addr: seeds[0]}
	if r := o.Request; r.GetAfterIndex() > 0 {
		w.pos = Position{r.GetAfterIndex(), r.GetAfterN()}
	}
	return w, nil
}

// Position is the last event delivered (or the start position given, or anchored).
func (w *Watcher) Position() Position {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pos
}

// Addrs are the nodes the Watcher knows: the seeds, then the members it learned.
func (w *Watcher) Addrs() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.addrs)
}

// Addr is the node of the current (or last) stream.
func (w *Watcher) Addr() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.addr
}

// Stats are the counts so far.
func (w *Watcher) Stats() Stats {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stats
}

// consumerError is fn's error, returned as it is.
type consumerError struct{ err error }

func (e consumerError) Error() string { return e.err.Error() }

// Run delivers events to fn, one at a time in feed order, until ctx ends (it returns ctx's
// error), fn fails (its error), no node could serve the watch for Grace (the last node's error),
// or a node refused the request in a way no other node would answer differently (an unknown
// topic, a position older than every node's history...). An event is delivered once fn returned
// nil for it; an event fn failed is not.
func (w *Watcher) Run(ctx context.Context, fn func(*v1.Event) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		w.wg.Wait()
		w.mu.Lock()
		for _, c := range w.conns {
			_ = c.Close()
		}
		w.conns = nil
		w.mu.Unlock()
	}()
	req := proto.Clone(w.opts.Request).(*v1.WatchRequest)
	// Only new events: "new" must mean the same on every node, so fix it as a position first.
	anchored := req.GetAfterIndex() > 0 || req.GetSince() != nil
	var (
		failingSince time.Time
		tried        int // nodes failed in this round
		outOfRange   int // nodes that answered OutOfRange in a row
		cuts         int // fruitless cut-offs in a row
		pause        = 100 * time.Millisecond
	)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		addr := w.Addr()
		conn, err := w.conn(addr)
		if err != nil {
			return err
		}
		progressed := false
		if !anchored {
			err = w.anchor(ctx, conn, req)
			anchored = err == nil
		}
		if anchored {
			progressed, err = w.stream(ctx, conn, req, fn)
		}
		if progressed {
			failingSince, tried, outOfRange, cuts, pause = time.Time{}, 0, 0, 0, 100*time.Millisecond
		}
		if status.Code(err) == codes.DeadlineExceeded || errors.Is(err, io.EOF) {
			// Our own deadline, which the server (or gRPC) saw first: the server ends the stream
			// when the call's deadline passes, with that status or cleanly.
			if dl, ok := ctx.Deadline(); ok && time.Until(dl) < time.Second {
				<-ctx.Done()
				return ctx.Err()
			}
		}
		var ce consumerError
		switch code := status.Code(err); {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.As(err, &ce):
			return ce.err
		case code == codes.ResourceExhausted:
			// Cut off for falling behind: resume at once, here; the replay is at our pace.
			w.count(func(s *Stats) { s.Cutoffs++ })
			if !progressed {
				if cuts++; cuts >= maxFruitlessCuts {
					return err
				}
			}
			w.logf("watch on %s cut off (%v); resuming after %s", addr, err, w.Position())
			continue
		case code == codes.OutOfRange:
			if outOfRange++; outOfRange >= len(w.Addrs()) {
				return err
			}
			w.logf("%s has no history that old (%v); trying another node", addr, err)
			w.next(addr)
			continue
		case !nodeFailure(err):
			return err
		}
		w.count(func(s *Stats) { s.Failovers++ })
		first := failingSince.IsZero()
		if first {
			failingSince = time.Now()
		}
		if time.Since(failingSince) > w.opts.Grace {
			return err
		}
		to := w.next(addr)
		if first { // the rest of a streak of failures is told by its end
			if p := w.Position(); p != (Position{}) {
				w.logf("lost the watch on %s: %v; resuming after %s on %s", addr, errText(err), p, to)
			} else {
				w.logf("no watch on %s: %v; trying %s", addr, errText(err), to)
			}
		}
		if tried++; tried >= len(w.Addrs()) {
			// Every node failed once: pause before the next round.
			tried = 0
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(pause):
			}
			pause = min(2*pause, maxPause)
		}
	}
}

// nodeFailure says whether a stream's end is the node's (or the network's) fault, so that
// another node may do better: the node went away, stopped, reset the stream or ended it, or
// failed inside.
func nodeFailure(err error) bool {
	if errors.Is(err, io.EOF) || errors.Is(err, errIdle) {
		return true
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.Canceled, codes.DeadlineExceeded, codes.Aborted, codes.Internal, codes.Unknown:
		return true
	}
	return false
}

func errText(err error) string {
	if s, ok := status.FromError(err); ok {
		return fmt.Sprintf("%s (%s)", s.Message(), s.Code())
	}
	return err.Error()
}

var errIdle = errors.New("no event and no heartbeat")

// anchor fixes "only new events" as the position after everything the node has applied, so
// that a stream resumed on another node starts at the same place.
func (w *Watcher) anchor(ctx context.Context, conn *grpc.ClientConn, req *v1.WatchRequest) error {
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	st, err := v1.NewClusterServiceClient(conn).GetStatus(cctx, &v1.GetStatusRequest{})
	if err != nil {
		return err
	}
	if st.GetAppliedIndex() == 0 {
		req.Since = timestamppb.New(time.Unix(0, 0)) // nothing applied yet: everything is new
		return nil
	}
	req.AfterIndex, req.AfterN, req.Since = st.GetAppliedIndex(), math.MaxUint32, nil
	w.mu.Lock()
	w.pos = Position{req.AfterIndex, req.AfterN}
	w.mu.Unlock()
	return nil
}

// stream follows one Watch stream on conn until it ends, delivering events and moving req past
// each. progressed says whether anything (event or heartbeat) came, i.e. the node served.
func (w *Watcher) stream(ctx context.Context, conn *grpc.ClientConn, req *v1.WatchRequest, fn func(*v1.Event) error) (progressed bool, err error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The idle clock runs while we wait for the node, not while the consumer takes an event.
	// Rather than resetting a timer around every Recv, the loop records when it started waiting
	// (0 while the consumer has an event), and the timer, when it fires, checks that.
	base := time.Now()
	var waiting atomic.Int64 // 1 + ns since base when the wait began; 0: not waiting
	var (
		idleMu  sync.Mutex
		idled   bool
		stopped bool
		timer   *time.Timer
	)
	idleMu.Lock()
	timer = time.AfterFunc(w.opts.Idle, func() {
		idleMu.Lock()
		defer idleMu.Unlock()
		if stopped {
			return
		}
		since := waiting.Load()
		if since == 0 { // the consumer is busy: the wait starts later
			timer.Reset(w.opts.Idle)
			return
		}
		if d := time.Since(base) - time.Duration(since-1); d < w.opts.Idle {
			timer.Reset(w.opts.Idle - d)
			return
		}
		idled = true
		cancel()
	})
	idleMu.Unlock()
	defer func() {
		idleMu.Lock()
		stopped = true
		timer.Stop()
		wasIdle := idled
		idleMu.Unlock()
		if err != nil && wasIdle && ctx.Err() == nil {
			err = fmt.Errorf("%w for %s", errIdle, w.opts.Idle)
		}
	}()
	waiting.Store(1 + int64(time.Since(base)))
	stream, err := v1.NewEventServiceClient(conn).Watch(sctx, req)
	if err != nil {
		return false, err
	}
	for {
		waiting.Store(1 + int64(time.Since(base)))
		resp, err := stream.Recv()
		waiting.Store(0)
		if err != nil {
			return progressed, err
		}
		if !progressed {
			progressed = true
			w.discover(ctx, conn)
		}
		if e := resp.GetEvent(); e != nil {
			if err := w.deliver(req, e, fn); err != nil {
				return progressed, err
			}
		}
		// A batch (asked for) is its events one after the other: the position moves past each
		// as fn takes it, so that a stream lost, or a consumer failing, in the middle of one
		// resumes after the last event taken.
		for _, e := range resp.GetBatch().GetEvents() {
			if err := w.deliver(req, e, fn); err != nil {
				return progressed, err
			}
		}
		// Anything else is a heartbeat.
	}
}

// deliver gives e to fn unless it is at or before the position, then moves the position (and
// req's start) past it.
func (w *Watcher) deliver(req *v1.WatchRequest, e *v1.Event, fn func(*v1.Event) error) error {
	p := Position{e.GetIndex(), e.GetN()}
	w.mu.Lock()
	dup := !w.pos.less(p) // every event's index is at least 1: the zero position is before all
	w.mu.Unlock()
	if dup {
		w.count(func(s *Stats) { s.Duplicates++ })
		return nil
	}
	if err := fn(e); err != nil {
		return consumerError{err}
	}
	w.mu.Lock()
	w.pos = p
	w.stats.Events++
	w.mu.Unlock()
	req.AfterIndex, req.AfterN, req.Since = p.Index, p.N, nil
	return nil
}

// discover learns the members' gRPC addresses from a node that serves, in the background.
func (w *Watcher) discover(ctx context.Context, conn *grpc.ClientConn) {
	if w.opts.NoDiscover {
		return
	}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		defer cancel()
		resp, err := v1.NewClusterServiceClient(conn).ListMembers(cctx, &v1.ListMembersRequest{Stale: true})
		if err != nil {
			return // the watch goes on with what it knows
		}
		addrs := slices.Clone(w.seeds)
		for _, m := range resp.GetMembers() {
			if a := m.GetGrpcAddress(); a != "" && !slices.Contains(addrs, a) {
				addrs = append(addrs, a)
			}
		}
		w.mu.Lock()
		if !slices.Equal(addrs, w.addrs) {
			w.addrs = addrs
		}
		w.mu.Unlock()
	}()
}

// next moves the watch from addr to the node after it in the list, and returns that node.
func (w *Watcher) next(addr string) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	i := slices.Index(w.addrs, addr) // -1 if the member left the list: start over
	w.addr = w.addrs[(i+1)%len(w.addrs)]
	return w.addr
}

func (w *Watcher) conn(addr string) (*grpc.ClientConn, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.conns == nil {
		return nil, errors.New("feedwatch: a Watcher runs once")
	}
	if c, ok := w.conns[addr]; ok {
		return c, nil
	}
	c, err := w.opts.Dial(addr)
	if err != nil {
		return nil, fmt.Errorf("feedwatch: %s: %w", addr, err)
	}
	w.conns[addr] = c
	return c, nil
}

func (w *Watcher) count(f func(*Stats)) {
	w.mu.Lock()
	f(&w.stats)
	w.mu.Unlock()
}

func (w *Watcher) logf(format string, args ...any) {
	if w.opts.Logf != nil {
		w.opts.Logf(format, args...)
	}
}
