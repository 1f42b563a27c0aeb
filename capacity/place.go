// Package capacity answers where a devserver goes and whether the fleet can lose a region: pure
// functions over a snapshot of the state (placement filters and scorers, headroom per region and
// flavor, and the N-1 loss simulation). It proposes nothing; callers turn its answers into
// commands.
package capacity

import (
	"fmt"
	"slices"
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
	// yet applied), by host name; nil means none.
	Pending map[string]fit.Amount
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

// A rejection code says which filter turned a host away; codes sort in filter order, and each
// stands for one reason text for a given request, so placement counts codes and writes the
// text once per code, not once per host.
const (
	codePass       = 0
	codeOtherSite  = 1
	codeState      = 2 // + the host state
	codeUnhealthy  = 20
	codeSpreadHost = 30
	codeSpreadSite = 31
	codeShortage   = 40 // + the fit.Shortage
	codeCount      = 48
)

// reject says which filter, if any, turns host h away for req.
func reject(req *Request, h *v1.Host, free fit.Amount) int {
	switch {
	case req.Site != "" && h.GetSite() != req.Site:
		return codeOtherSite
	case h.GetState() != v1.HostState_HOST_STATE_ACTIVE:
		return codeState + int(h.GetState())
	case h.GetHealth() == v1.HostHealth_HOST_HEALTH_UNHEALTHY:
		return codeUnhealthy
	case req.Spread == SpreadHosts && req.Avoid.Hosts[h.GetName()]:
		return codeSpreadHost
	case req.Spread == SpreadSites && req.Avoid.Sites[h.GetSite()]:
		return codeSpreadSite
	}
	if s := fit.Check(req.Flavor, h, free); s != fit.None {
		return codeShortage + int(s)
	}
	return codePass
}

// reason is the explanation's text for a rejection code.
func reason(req *Request, code int) string {
	switch {
	case code == codeOtherSite:
		return "in other sites"
	case code >= codeState && code < codeUnhealthy:
		return state.HostStateName(v1.HostState(code - codeState))
	case code == codeUnhealthy:
		return "unhealthy"
	case code == codeSpreadHost:
		return "already run a devserver of " + req.Owner
	case code == codeSpreadSite:
		return "are in sites that already run a devserver of " + req.Owner
	}
	return fit.Shortage(code - codeShortage).Describe(req.Flavor)
}

// Place chooses a host for req among hosts (the region's hosts, in any order): the
// best-scoring host that passes every filter, ties going to the first name. With none, the
// decision carries the explanation.
func Place(hosts []*v1.Host, req *Request) Decision {
	cands := make([]candidate, len(hosts))
	at := make(map[string]int, len(hosts))
	for i, h := range hosts {
		cands[i] = candidateOf(h)
		at[h.GetName()] = i
	}
	return decide(cands, req, pendingAt(req.Pending, func(host string) (int, bool) { i, ok := at[host]; return i, ok }))
}

// candidate is a host with the figures placement needs, worked out once.
type candidate struct {
	host   *v1.Host
	usable fit.Amount
	free   fit.Amount // before pending placements
}

func candidateOf(h *v1.Host) candidate {
	u := fit.Usable(h)
	return candidate{host: h, usable: u, free: u.Sub(fit.Of(h.GetAllocated()))}
}

// decide is Place over hosts whose figures are already worked out.
// pending holds req.Pending by candidate position, in position order.
func decide(cands []candidate, req *Request, pending []pendingOn) Decision {
	d := Decision{Explanation: Explanation{Region: req.Region, Hosts: len(cands)}}
	var rejected [codeCount]int
	var regionFree fit.Amount
	need := fit.Of(req.Flavor.GetResources())
	physical := fit.Physical(req.Flavor)
	for i := range cands {
		c := &cands[i]
		h, free := c.host, c.free
		if len(pending) > 0 && pending[0].at == i {
			free = free.Sub(pending[0].amount)
			pending = pending[1:]
		}
		if Eligible(h) {
			regionFree = regionFree.Add(free)
		}
		if code := reject(req, h, free); code != codePass {
			rejected[code]++
			continue
		}
		d.Candidates++
		n := need
		if physical {
			n = c.usable
		}
		s := score(req.Scorers, c.usable, free, n)
		if d.Host == nil || s > d.Score || (s == d.Score && h.GetName() < d.Host.GetName()) {
			d.Host, d.Score = h, s
		}
	}
	if d.Host != nil && !req.Reserve.IsZero() && !regionFree.Sub(fit.Need(req.Flavor, d.Host)).Covers(req.Reserve) {
		d.Host, d.Score = nil, 0
		d.Explanation.ReserveBlocked, d.Explanation.Reserve, d.Explanation.Free = true, req.Reserve, regionFree
	}
	for code, n := range rejected {
		if n > 0 {
			d.Explanation.Rejected = append(d.Explanation.Rejected, Rejection{Reason: reason(req, code), Hosts: n})
		}
	}
	return d
}

type pendingOn struct {
	at     int // position in the candidates
	amount fit.Amount
}

// pendingAt places the pending amounts on the candidates' positions, in position order.
func pendingAt(pending map[string]fit.Amount, position func(host string) (int, bool)) []pendingOn {
	var out []pendingOn
	for host, a := range pending {
		if i, ok := position(host); ok {
			out = append(out, pendingOn{at: i, amount: a})
		}
	}
	slices.SortFunc(out, func(a, b pendingOn) int { return a.at - b.at })
	return out
}
