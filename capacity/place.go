// Package capacity answers where a devserver goes and whether the fleet can lose a region: pure
// functions over a snapshot of the state (placement filters and scorers, headroom per region and
// flavor, and the N-1 loss simulation). It proposes nothing; callers turn its answers into
// commands.
package capacity

import (
	"fmt"
	"sort"
	"strings"

	"github.com/devfleet/devfleet/capacity/fit"
	"github.com/devfleet/devfleet/controlplane/state"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// Spread asks placement to keep devservers of one owner apart.
type Spread int

// Spread scopes.
const (
	SpreadNone Spread = iota
	// SpreadHosts: no two devservers of the owner on one host.
	SpreadHosts
	// SpreadSites: no two in one site.
	SpreadSites
)

// Request is one placement question.
type Request struct {
	Flavor *v1.Flavor
	Region string
	// Site, if set, limits placement to one site.
	Site string
	// Spread and Owner ask for anti-affinity with the owner's other devservers, whose hosts and
	// sites are in Avoid (see AvoidFor).
	Spread Spread
	Owner  string
	Avoid  Avoid
	// Scorers rank the hosts that pass the filters; empty means Binpack.
	Scorers []Weighted
	// Pending is taken off a host's free resources before fitting (placements proposed and not
	// yet applied); nil means none.
	Pending func(host string) fit.Amount
	// Reserve, if not zero, is the room the region must keep free: a placement that would eat
	// into it is refused.
	Reserve fit.Amount
}

// Avoid lists the hosts and sites that already run a devserver of the owner.
type Avoid struct {
	Hosts map[string]bool
	Sites map[string]bool
}

// AvoidFor collects where the owner's devservers run.
func AvoidFor(v *state.View, owner string) Avoid {
	a := Avoid{Hosts: map[string]bool{}, Sites: map[string]bool{}}
	for _, d := range v.DevserversOf(owner) {
		if d.GetHost() != "" {
			a.Hosts[d.GetHost()] = true
			a.Sites[d.GetSite()] = true
		}
	}
	return a
}

// Scorer ranks a host for a flavor, given the host's usable and free resources before the
// placement; higher is better. Scores depend only on the host, so a simulation can keep them in
// a heap.
type Scorer interface {
	Name() string
	Score(usable, free, need fit.Amount) float64
}

// Weighted is a scorer with its weight.
type Weighted struct {
	Scorer Scorer
	Weight float64
}

// utilization is the mean of the vCPU and memory fractions in use after placing need.
func utilization(usable, free, need fit.Amount) float64 {
	frac := func(used, total int64) float64 {
		if total <= 0 {
			return 1
		}
		return float64(used) / float64(total)
	}
	after := free.Sub(need)
	return (frac(usable.VCPUs-after.VCPUs, usable.VCPUs) + frac(usable.MemoryMiB-after.MemoryMiB, usable.MemoryMiB)) / 2
}

type binpack struct{}

func (binpack) Name() string { return "binpack" }
func (binpack) Score(usable, free, need fit.Amount) float64 {
	return utilization(usable, free, need)
}

type spread struct{}

func (spread) Name() string { return "spread" }
func (spread) Score(usable, free, need fit.Amount) float64 {
	return 1 - utilization(usable, free, need)
}

// Binpack fills the fullest host that fits: devservers leave whole hosts free for big flavors and
// for evacuations. The default for devservers.
var Binpack Scorer = binpack{}

// SpreadLoad prefers the emptiest host: container pools, where a host's loss should hurt few.
var SpreadLoad Scorer = spread{}

// DefaultScorers is what placement uses when a request names none.
var DefaultScorers = []Weighted{{Scorer: Binpack, Weight: 1}}

func score(ws []Weighted, usable, free, need fit.Amount) float64 {
	if len(ws) == 0 {
		ws = DefaultScorers
	}
	var s float64
	for _, w := range ws {
		s += w.Weight * w.Scorer.Score(usable, free, need)
	}
	return s
}

// Decision is a placement: the chosen host, or none with the reasons.
type Decision struct {
	Host  *v1.Host
	Score float64
	// Candidates is how many hosts passed every filter.
	Candidates  int
	Explanation Explanation
}

// Explanation counts, per filter, the hosts it turned away.
type Explanation struct {
	Region string
	Hosts  int
	// Rejected are "reason: count" in filter order.
	Rejected []Rejection
	// ReserveBlocked: a host fitted, but taking it would eat into the region's reserve.
	ReserveBlocked bool
	// Reserve and Free are the region's reserve and free room, when ReserveBlocked.
	Reserve, Free fit.Amount
}

// Rejection is one reason hosts were turned away and how many.
type Rejection struct {
	Reason string
	Hosts  int
}

// String reads like "region eu: 40 hosts; 12 cordoned, 25 lack memory for flavor xl (need
// 65536 MiB), 3 lack GPUs for flavor xl (need 1)".
func (e Explanation) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "region %s: %d %s", e.Region, e.Hosts, plural(e.Hosts, "host", "hosts"))
	for i, r := range e.Rejected {
		if i == 0 {
			b.WriteString("; ")
		} else {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%d %s", r.Hosts, r.Reason)
	}
	if e.ReserveBlocked {
		fmt.Fprintf(&b, "; the hosts that fit would eat into the region's capacity reserve (%s free, %s reserved)", describe(e.Free), describe(e.Reserve))
	}
	return b.String()
}

func describe(a fit.Amount) string {
	return fmt.Sprintf("%d vCPUs, %d MiB", a.VCPUs, a.MemoryMiB)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// reject is the reason the filters turn host h away for req, or "".
func reject(req *Request, h *v1.Host, free fit.Amount) (reason string, order int) {
	switch {
	case req.Site != "" && h.GetSite() != req.Site:
		return "in other sites", 0
	case h.GetState() != v1.HostState_HOST_STATE_ACTIVE:
		return state.HostStateName(h.GetState()), 1 + int(h.GetState())
	case h.GetHealth() == v1.HostHealth_HOST_HEALTH_UNHEALTHY:
		return "unhealthy", 20
	case req.Spread == SpreadHosts && req.Avoid.Hosts[h.GetName()]:
		return "already run a devserver of " + req.Owner, 30
	case req.Spread == SpreadSites && req.Avoid.Sites[h.GetSite()]:
		return "are in sites that already run a devserver of " + req.Owner, 31
	}
	if s := fit.Check(req.Flavor, h, free); s != fit.None {
		return s.Describe(req.Flavor), 40 + int(s)
	}
	return "", 0
}

// Place chooses a host for req among hosts (the region's hosts, in any order): the
// best-scoring host that passes every filter, ties going to the first name. With none, the decision carries
// the explanation.
func Place(hosts []*v1.Host, req *Request) Decision {
	d := Decision{Explanation: Explanation{Region: req.Region, Hosts: len(hosts)}}
	type counted struct {
		n, order int
	}
	var reasons map[string]*counted
	var regionFree fit.Amount
	for _, h := range hosts {
		usable := fit.Usable(h)
		free := usable.Sub(fit.Of(h.GetAllocated()))
		if req.Pending != nil {
			free = free.Sub(req.Pending(h.GetName()))
		}
		if Eligible(h) {
			regionFree = regionFree.Add(free)
		}
		if reason, order := reject(req, h, free); reason != "" {
			if reasons == nil {
				reasons = map[string]*counted{}
			}
			if c := reasons[reason]; c != nil {
				c.n++
			} else {
				reasons[reason] = &counted{n: 1, order: order}
			}
			continue
		}
		d.Candidates++
		need := usable
		if !fit.Physical(req.Flavor) {
			need = fit.Of(req.Flavor.GetResources())
		}
		s := score(req.Scorers, usable, free, need)
		if d.Host == nil || s > d.Score || (s == d.Score && h.GetName() < d.Host.GetName()) {
			d.Host, d.Score = h, s
		}
	}
	if d.Host != nil && !req.Reserve.IsZero() && !regionFree.Sub(fit.Need(req.Flavor, d.Host)).Covers(req.Reserve) {
		d.Host, d.Score = nil, 0
		d.Explanation.ReserveBlocked, d.Explanation.Reserve, d.Explanation.Free = true, req.Reserve, regionFree
	}
	for reason, c := range reasons {
		d.Explanation.Rejected = append(d.Explanation.Rejected, Rejection{Reason: reason, Hosts: c.n})
	}
	sort.SliceStable(d.Explanation.Rejected, func(i, j int) bool {
		a, b := reasons[d.Explanation.Rejected[i].Reason], reasons[d.Explanation.Rejected[j].Reason]
		if a.order != b.order {
			return a.order < b.order
		}
		return d.Explanation.Rejected[i].Reason < d.Explanation.Rejected[j].Reason
	})
	return d
}
