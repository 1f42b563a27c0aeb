package drain

import "time"

// Schedule assigns Start and Wave to the moving items (Move, ColdMove) in order with greedy list
// scheduling: each item starts as soon as a move ends and every budget it touches (source host,
// dest host, both sites, total) has room; returns the makespan. Budgets are never exceeded.
// Items that do not move are left as they are.
//
// It simulates the migration queue (migrate.Schedule): whenever a move ends, the pending moves
// are walked in order and each one that fits starts, so a move held back by a busy host or site
// does not hold back those after it. Durations are the items' Expected.
//
// The walk is not a scan of everything pending, which would make a drain of 50,000 devservers
// quadratic (a full site or destination blocks thousands of moves at every instant). Pending
// moves wait in queues ordered by plan order, each behind one budget: per pair of sites
// (source, destination), and per host for moves found blocked by a full host. A queue whose
// budget is full is skipped whole; the others offer their first move, and the earliest offer
// in plan order is tried first: it starts, or goes to wait behind the budget that blocks it.
// Each start, end and wait costs O(log n).
func Schedule(items []Item, b Budgets) time.Duration {
	s := newScheduler(items, b.WithDefaults())
	return s.run()
}

type rank int32 // a moving item's place in plan order

func (r rank) before(o rank) bool { return r < o }

// offer is a queue's first move: its plan rank, so that the earliest one is tried first. An
// offer goes stale when its queue moves on or its budget fills; stale offers are skipped.
type offer struct {
	first rank
	queue int32
}

func (o offer) before(p offer) bool { return o.first < p.first }

// ending is a move in flight: when it ends.
type ending struct {
	at   time.Duration
	move rank
}

func (e ending) before(o ending) bool { return e.at < o.at || (e.at == o.at && e.move < o.move) }

// Queues are numbered: first one per pair of sites, then one per source host, then one per
// destination host.
type scheduler struct {
	b     Budgets
	items []Item
	// at[r] is the position in items of the move of rank r; the rest is by rank too.
	at               []int
	src, dst         []int32 // host numbers (sources and destinations apart)
	srcSite, dstSite []int32
	pairOf           []int32

	queues           []minHeap[rank]
	pairs            []struct{ from, to int32 } // the sites of queue p < len(pairs)
	srcBusy, dstBusy []int
	siteBusy         []int
	pairsAt          [][]int32 // the pair queues that touch a site
	busy             int
	offers           minHeap[offer]
	inFlight         minHeap[ending]

	wave                int
	lastStart, makespan time.Duration
	started             int
}

func newScheduler(items []Item, b Budgets) *scheduler {
	s := &scheduler{b: b, items: items, wave: -1}
	srcs, dsts, sites := map[string]int32{}, map[string]int32{}, map[string]int32{}
	type pair struct{ from, to int32 }
	pairs := map[pair]int32{}
	number := func(m map[string]int32, name string) int32 {
		n, ok := m[name]
		if !ok {
			n = int32(len(m))
			m[name] = n
		}
		return n
	}
	for i := range items {
		it := &items[i]
		if !it.Kind.Moves() {
			continue
		}
		s.at = append(s.at, i)
		s.src = append(s.src, number(srcs, it.Source))
		s.dst = append(s.dst, number(dsts, it.Dest))
		from, to := number(sites, it.SourceSite), number(sites, it.DestSite)
		s.srcSite, s.dstSite = append(s.srcSite, from), append(s.dstSite, to)
		p, ok := pairs[pair{from, to}]
		if !ok {
			p = int32(len(s.pairs))
			pairs[pair{from, to}] = p
			s.pairs = append(s.pairs, struct{ from, to int32 }{from, to})
			s.queues = append(s.queues, nil)
		}
		s.pairOf = append(s.pairOf, p)
		// Ranks arrive in increasing order: appending keeps each queue a heap.
		s.queues[p] = append(s.queues[p], rank(len(s.at)-1))
	}
	s.queues = append(s.queues, make([]minHeap[rank], len(srcs)+len(dsts))...)
	s.srcBusy, s.dstBusy = make([]int, len(srcs)), make([]int, len(dsts))
	s.siteBusy, s.pairsAt = make([]int, len(sites)), make([][]int32, len(sites))
	for p, sp := range s.pairs {
		s.pairsAt[sp.from] = append(s.pairsAt[sp.from], int32(p))
		if sp.to != sp.from {
			s.pairsAt[sp.to] = append(s.pairsAt[sp.to], int32(p))
		}
	}
	return s
}

// srcQueue and dstQueue number the queues of the moves waiting on a host.
func (s *scheduler) srcQueue(host int32) int32 { return int32(len(s.pairs)) + host }
func (s *scheduler) dstQueue(host int32) int32 { return int32(len(s.pairs)+len(s.srcBusy)) + host }

func (s *scheduler) run() time.Duration {
	for p := range s.pairs {
		s.offer(int32(p))
	}
	var now time.Duration
	for {
		s.startFitting(now)
		if len(s.inFlight) == 0 {
			break
		}
		now = s.inFlight[0].at
		for len(s.inFlight) > 0 && s.inFlight[0].at == now {
			s.end(s.inFlight.pop().move)
		}
	}
	if s.started != len(s.at) {
		// Alone, any move fits every budget (each is at least 1), so this is a bug here.
		panic("drain: the schedule left moves that never started")
	}
	return s.makespan
}

// open reports whether queue q's budget has room: its sites' for a pair of sites, its host's
// for a host's queue.
func (s *scheduler) open(q int32) bool {
	switch n := int32(len(s.pairs)); {
	case q < n:
		return s.sitesFree(s.pairs[q].from, s.pairs[q].to)
	case q < n+int32(len(s.srcBusy)):
		return s.srcBusy[q-n] < s.b.PerSource
	default:
		return s.dstBusy[q-n-int32(len(s.srcBusy))] < s.b.PerDest
	}
}

func (s *scheduler) sitesFree(from, to int32) bool {
	return s.siteBusy[from] < s.b.PerSite && s.siteBusy[to] < s.b.PerSite
}

// offer puts queue q's first move on offer, if q's budget has room.
func (s *scheduler) offer(q int32) {
	if len(s.queues[q]) > 0 && s.open(q) {
		s.offers.push(offer{first: s.queues[q][0], queue: q})
	}
}

// startFitting starts, in plan order, every pending move that fits now.
func (s *scheduler) startFitting(now time.Duration) {
	for s.busy < s.b.Total && len(s.offers) > 0 {
		o := s.offers.pop()
		q := &s.queues[o.queue]
		if len(*q) == 0 || (*q)[0] != o.first || !s.open(o.queue) {
			continue // stale: the queue moved on, or its budget filled since
		}
		r := q.pop()
		switch {
		case s.srcBusy[s.src[r]] >= s.b.PerSource:
			s.queues[s.srcQueue(s.src[r])].push(r)
		case s.dstBusy[s.dst[r]] >= s.b.PerDest:
			s.queues[s.dstQueue(s.dst[r])].push(r)
		case !s.sitesFree(s.srcSite[r], s.dstSite[r]):
			s.queues[s.pairOf[r]].push(r) // from a host's queue: back behind its sites
		default:
			s.start(r, now)
		}
		s.offer(o.queue)
	}
}

func (s *scheduler) start(r rank, now time.Duration) {
	s.srcBusy[s.src[r]]++
	s.dstBusy[s.dst[r]]++
	s.siteBusy[s.srcSite[r]]++
	if s.dstSite[r] != s.srcSite[r] {
		s.siteBusy[s.dstSite[r]]++
	}
	s.busy++
	s.started++
	if s.wave < 0 || now != s.lastStart {
		s.wave, s.lastStart = s.wave+1, now
	}
	it := &s.items[s.at[r]]
	it.Start, it.Wave = now, s.wave
	end := now + max(it.Expected, 0)
	s.makespan = max(s.makespan, end)
	s.inFlight.push(ending{at: end, move: r})
}

// end frees what move r held; a budget that was full offers its queues again.
func (s *scheduler) end(r rank) {
	s.busy--
	if s.srcBusy[s.src[r]]--; s.srcBusy[s.src[r]] == s.b.PerSource-1 {
		s.offer(s.srcQueue(s.src[r]))
	}
	if s.dstBusy[s.dst[r]]--; s.dstBusy[s.dst[r]] == s.b.PerDest-1 {
		s.offer(s.dstQueue(s.dst[r]))
	}
	s.freeSite(s.srcSite[r])
	if s.dstSite[r] != s.srcSite[r] {
		s.freeSite(s.dstSite[r])
	}
}

func (s *scheduler) freeSite(site int32) {
	if s.siteBusy[site]--; s.siteBusy[site] == s.b.PerSite-1 {
		for _, p := range s.pairsAt[site] {
			s.offer(p)
		}
	}
}
