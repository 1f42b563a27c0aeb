package builtin

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/devfleet/devfleet/capacity"
	"github.com/devfleet/devfleet/controlplane/analyzer"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// capacityTopics are the topics whose changes can break or mend N-1.
var capacityTopics = []string{"host", "devserver", "flavor", "region", "site"}

func capacityRisk() *analyzer.Analyzer {
	return &analyzer.Analyzer{
		Name:        CapacityRisk,
		Description: "Whether the fleet can lose any one region and keep every devserver (N-1); where it cannot: which flavors lack room, since when, and which change broke it.",
		Inputs: []analyzer.Input{
			{Name: "region", Type: analyzer.String, Description: "only the loss of this region (default: each region)"},
			{Name: "window", Type: analyzer.Duration, Default: "24h", Description: "how far back to look for the change that broke it"},
		},
		Run: runCapacityRisk,
	}
}

func regionLoss(v *analyzer.View, region string) capacity.Loss {
	return capacity.Load(v.View).Lose(capacity.Gone{Regions: []string{region}}, capacity.LossOptions{})
}

func runCapacityRisk(ctx context.Context, env *analyzer.Env, in analyzer.Inputs) ([]*v1.Finding, error) {
	v, err := env.State(ctx)
	if err != nil {
		return nil, err
	}
	if all := v.Regions(); len(all) == 1 {
		return []*v1.Finding{finding(info, "capacity/n-1", fmt.Sprintf("the fleet has one region (%s): losing it loses every devserver, whatever the room; N-1 needs a second region", all[0].GetName()))}, nil
	}
	var regions []string
	if r := in.String("region"); r != "" {
		if _, err := v.GetRegion(r); err != nil {
			return nil, err
		}
		regions = []string{r}
	} else {
		for _, r := range v.Regions() {
			regions = append(regions, r.GetName())
		}
	}
	since := windowStart(env, in.Duration("window"))
	var out []*v1.Finding
	for _, r := range regions {
		loss := regionLoss(v, r)
		if loss.OK() {
			continue
		}
		f, err := explainBroken(ctx, env, r, loss, since)
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	if len(out) == 0 {
		what := "any one region"
		if len(regions) == 1 {
			what = "region " + regions[0]
		}
		out = append(out, finding(info, "capacity/n-1", fmt.Sprintf("N-1 holds: the fleet can lose %s and find a home for every devserver", what)))
	}
	return out, nil
}

func explainBroken(ctx context.Context, env *analyzer.Env, region string, loss capacity.Loss, since time.Time) (*v1.Finding, error) {
	now := env.Now()
	var shorts []string
	for _, s := range loss.Shortfall {
		shorts = append(shorts, fmt.Sprintf("%s ×%d", s.Flavor, s.Devservers))
	}
	f := finding(critical, subject("region", region), fmt.Sprintf("N-1 is broken: if region %s were lost, %d of its %d devservers would have no home (%s)", region, len(loss.Homeless), loss.Affected, strings.Join(shorts, ", ")))
	for _, s := range loss.Shortfall {
		f.Actions = append(f.Actions, action("add-capacity", region+"/"+s.Flavor, fmt.Sprintf("add room for %d devserver(s) of flavor %s in the regions that would take region %s's devservers", s.Devservers, s.Flavor, region), ""))
	}
	broken := func(t time.Time) (bool, error) {
		v, err := env.StateAt(ctx, t)
		if err != nil {
			return false, err
		}
		if _, err := v.GetRegion(region); err != nil {
			return false, nil
		}
		return !regionLoss(v, region).OK(), nil
	}
	atStart, err := broken(since)
	if err != nil {
		return nil, err
	}
	if atStart {
		f.Details = append(f.Details, fmt.Sprintf("it was already broken %s, as far back as this looked", at(now, tsAt(since))))
		return f, nil
	}
	evs, err := env.Events(ctx, analyzer.Query{Topics: capacityTopics, Since: since, Limit: 100000})
	if err != nil {
		return nil, err
	}
	// The first change after which it is broken: a search over the changes, assuming it stayed
	// broken once it broke (if it flickered, this finds one of the breaks).
	var searchErr error
	i := sort.Search(len(evs), func(i int) bool {
		if searchErr != nil {
			return true
		}
		b, err := broken(evs[i].GetTime().AsTime())
		if err != nil {
			searchErr = err
		}
		return b
	})
	if searchErr != nil {
		return nil, searchErr
	}
	if i == len(evs) {
		return f, nil
	}
	cause := evs[i]
	desc, err := describeChange(ctx, env, cause)
	if err != nil {
		return nil, err
	}
	f.Details = append(f.Details, fmt.Sprintf("broken since %s, by this change: %s", when(now, cause.GetTime()), desc))
	f.Evidence = append(f.Evidence, event(cause, "the change that broke N-1"))
	return f, nil
}

func tsAt(t time.Time) *timestamppb.Timestamp { return timestamppb.New(t) }

// describeChange says in words what an event changed, against the object's state just before.
func describeChange(ctx context.Context, env *analyzer.Env, e *v1.Event) (string, error) {
	m, err := e.GetObject().UnmarshalNew()
	if err != nil {
		return "", err
	}
	before, err := env.StateAt(ctx, e.GetTime().AsTime().Add(-time.Nanosecond))
	if err != nil {
		before = nil
	}
	switch x := m.(type) {
	case *v1.Host:
		var old *v1.Host
		if before != nil {
			old, _ = before.GetHost(x.GetName())
		}
		switch {
		case e.GetDeleted():
			return fmt.Sprintf("host %s was removed", x.GetName()), nil
		case old == nil:
			return fmt.Sprintf("host %s was added", x.GetName()), nil
		case old.GetState() != x.GetState():
			s := fmt.Sprintf("host %s went %s", x.GetName(), enumWord(x.GetState().String(), "HOST_STATE_"))
			if x.GetStateReason() != "" {
				s += " (" + x.GetStateReason() + ")"
			}
			return s, nil
		case old.GetHealth() != x.GetHealth():
			return fmt.Sprintf("host %s became %s", x.GetName(), enumWord(x.GetHealth().String(), "HOST_HEALTH_")), nil
		case !proto.Equal(old.GetCapacity(), x.GetCapacity()) || !proto.Equal(old.GetReserved(), x.GetReserved()):
			return fmt.Sprintf("host %s's capacity changed", x.GetName()), nil
		}
		return fmt.Sprintf("host %s changed", x.GetName()), nil
	case *v1.Devserver:
		if e.GetDeleted() {
			return fmt.Sprintf("devserver %s was deleted", x.GetName()), nil
		}
		return fmt.Sprintf("devserver %s (flavor %s, region %s) was created or changed", x.GetName(), x.GetFlavor(), x.GetRegion()), nil
	case *v1.Flavor:
		return fmt.Sprintf("flavor %s changed", x.GetName()), nil
	case *v1.Region:
		return fmt.Sprintf("region %s changed (its reserve or its allowed flavors)", x.GetName()), nil
	case *v1.Site:
		return fmt.Sprintf("site %s changed", x.GetName()), nil
	}
	return fmt.Sprintf("%s %s changed", e.GetTopic(), e.GetKey()), nil
}
