package validate

import (
	"slices"
	"strings"

	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/devfleet/devfleet/controlplane/apierror"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// Region checks a region as stored. prefix is the request field path it came in ("region").
func Region(prefix string, r *v1.Region) error {
	if r == nil {
		return apierror.Invalid(prefix, "must be set")
	}
	if err := Name(prefix+".name", r.GetName()); err != nil {
		return err
	}
	if err := Reserve(prefix+".reserve", r.GetReserve()); err != nil {
		return err
	}
	return Text(prefix+".description", r.GetDescription(), MaxDescLen)
}

// Reserve checks a region's capacity reserve: a fraction up to 0.9, or a count of hosts.
func Reserve(field string, r *v1.CapacityReserve) error {
	switch {
	case r == nil:
		return nil
	case r.GetFraction() != 0 && r.GetHosts() != 0:
		return apierror.Invalid(field, "set fraction or hosts, not both")
	case !(r.GetFraction() >= 0 && r.GetFraction() <= 0.9): // also rejects NaN
		return apierror.Invalid(field+".fraction", "must be between 0 and 0.9, got %g", r.GetFraction())
	case r.GetHosts() < 0 || r.GetHosts() > 10000:
		return apierror.Invalid(field+".hosts", "must be between 0 and 10000, got %d", r.GetHosts())
	}
	return nil
}

// Regions checks a list of region names: valid and distinct.
func Regions(field string, names []string) error {
	if len(names) > MaxLabels {
		return apierror.Invalid(field, "must have at most %d entries, got %d", MaxLabels, len(names))
	}
	seen := map[string]bool{}
	for _, n := range names {
		if err := Name(field, n); err != nil {
			return err
		}
		if seen[n] {
			return apierror.Invalid(field, "%q is listed twice", n)
		}
		seen[n] = true
	}
	return nil
}

// Site checks a site as stored.
func Site(prefix string, s *v1.Site) error {
	if s == nil {
		return apierror.Invalid(prefix, "must be set")
	}
	if err := Name(prefix+".name", s.GetName()); err != nil {
		return err
	}
	if err := Name(prefix+".region", s.GetRegion()); err != nil {
		return err
	}
	return Text(prefix+".description", s.GetDescription(), MaxDescLen)
}

// Host checks a host as stored: the whole object, so the FSM can run it after merging an update.
func Host(prefix string, h *v1.Host) error {
	if h == nil {
		return apierror.Invalid(prefix, "must be set")
	}
	if err := Name(prefix+".name", h.GetName()); err != nil {
		return err
	}
	if err := Name(prefix+".site", h.GetSite()); err != nil {
		return err
	}
	if err := Resources(prefix+".capacity", h.GetCapacity(), true); err != nil {
		return err
	}
	if err := Resources(prefix+".reserved", h.GetReserved(), false); err != nil {
		return err
	}
	if err := ReserveFits(prefix+".reserved", h.GetReserved(), h.GetCapacity()); err != nil {
		return err
	}
	if err := Overcommit(prefix+".overcommit", h.GetOvercommit()); err != nil {
		return err
	}
	if err := Labels(prefix+".labels", h.GetLabels()); err != nil {
		return err
	}
	if err := LibvirtURI(prefix+".libvirt_uri", h.GetLibvirtUri()); err != nil {
		return err
	}
	if err := LibvirtURI(prefix+".migration_uri", h.GetMigrationUri()); err != nil {
		return err
	}
	return Text(prefix+".state_reason", h.GetStateReason(), MaxReasonLen)
}

// ReserveFits checks that a host keeps back less than it has, in every dimension.
func ReserveFits(field string, reserved, capacity *v1.Resources) error {
	if reserved == nil {
		return nil
	}
	for _, d := range []struct {
		name string
		r, c int64
	}{
		{"vcpus", reserved.GetVcpus(), capacity.GetVcpus()},
		{"memory_mib", reserved.GetMemoryMib(), capacity.GetMemoryMib()},
		{"disk_gib", reserved.GetDiskGib(), capacity.GetDiskGib()},
		{"gpus", reserved.GetGpus(), capacity.GetGpus()},
	} {
		if d.r > d.c {
			return apierror.Invalid(field+"."+d.name, "reserves %d, more than the host's capacity of %d", d.r, d.c)
		}
	}
	return nil
}

// Flavor checks a flavor as stored.
func Flavor(prefix string, f *v1.Flavor) error {
	if f == nil {
		return apierror.Invalid(prefix, "must be set")
	}
	if err := Name(prefix+".name", f.GetName()); err != nil {
		return err
	}
	if err := Resources(prefix+".resources", f.GetResources(), true); err != nil {
		return err
	}
	if _, ok := v1.FlavorKind_name[int32(f.GetKind())]; !ok || f.GetKind() == v1.FlavorKind_FLAVOR_KIND_UNSPECIFIED {
		return apierror.Invalid(prefix+".kind", "must be FLAVOR_KIND_VM or FLAVOR_KIND_PHYSICAL")
	}
	if err := Regions(prefix+".allowed_regions", f.GetAllowedRegions()); err != nil {
		return err
	}
	if _, ok := v1.RepairPolicy_name[int32(f.GetRepair())]; !ok {
		return apierror.Invalid(prefix+".repair", "must be REPAIR_POLICY_RECREATE or REPAIR_POLICY_NOTIFY_ONLY")
	}
	return Text(prefix+".description", f.GetDescription(), MaxDescLen)
}

// Devserver checks a devserver record as stored (after the leader stamped ID and expiry).
func Devserver(prefix string, d *v1.Devserver) error {
	if d == nil {
		return apierror.Invalid(prefix, "must be set")
	}
	if err := Name(prefix+".name", d.GetName()); err != nil {
		return err
	}
	if err := User(prefix+".owner", d.GetOwner()); err != nil {
		return err
	}
	if err := Sharers(prefix+".sharers", d.GetOwner(), d.GetSharers()); err != nil {
		return err
	}
	if err := Name(prefix+".flavor", d.GetFlavor()); err != nil {
		return err
	}
	if err := Name(prefix+".region", d.GetRegion()); err != nil {
		return err
	}
	if err := OptionalName(prefix+".host", d.GetHost()); err != nil {
		return err
	}
	switch d.GetLifespan() {
	case v1.Lifespan_LIFESPAN_PERMANENT:
		if d.GetExpireTime() != nil {
			return apierror.Invalid(prefix+".expire_time", "must be empty for a permanent devserver")
		}
	case v1.Lifespan_LIFESPAN_TEMPORARY:
		if d.GetExpireTime() == nil {
			return apierror.Invalid(prefix+".expire_time", "must be set for a temporary devserver")
		}
		if err := d.GetExpireTime().CheckValid(); err != nil {
			return apierror.Invalid(prefix+".expire_time", "%v", err)
		}
	default:
		return apierror.Invalid(prefix+".lifespan", "must be LIFESPAN_TEMPORARY or LIFESPAN_PERMANENT")
	}
	if _, ok := v1.Power_name[int32(d.GetPower())]; !ok {
		return apierror.Invalid(prefix+".power", "unknown power %d", d.GetPower())
	}
	if err := Features(prefix+".features", d.GetFeatures()); err != nil {
		return err
	}
	return Text(prefix+".state_reason", d.GetStateReason(), MaxReasonLen)
}

// MaxFeatures bounds the extras one devserver asks for.
const MaxFeatures = 16

// Features checks a devserver's feature names: valid names, distinct, at most MaxFeatures.
func Features(field string, features []string) error {
	if len(features) > MaxFeatures {
		return apierror.Invalid(field, "at most %d features, got %d", MaxFeatures, len(features))
	}
	seen := map[string]bool{}
	for _, f := range features {
		if err := Name(field, f); err != nil {
			return err
		}
		if seen[f] {
			return apierror.Invalid(field, "%q is listed twice", f)
		}
		seen[f] = true
	}
	return nil
}

// Sharers checks the users a devserver is shared with: valid, distinct, not the owner.
func Sharers(field, owner string, sharers []string) error {
	if len(sharers) > MaxSharers {
		return apierror.Invalid(field, "must have at most %d entries, got %d", MaxSharers, len(sharers))
	}
	seen := make(map[string]bool, len(sharers))
	for _, s := range sharers {
		if err := User(field, s); err != nil {
			return err
		}
		if s == owner {
			return apierror.Invalid(field, "%q is the owner", s)
		}
		if seen[s] {
			return apierror.Invalid(field, "%q is listed twice", s)
		}
		seen[s] = true
	}
	return nil
}

// UpdatePaths checks an update mask against the paths a resource allows to change and returns
// the paths to apply. An empty mask means defaults.
func UpdatePaths(field string, mask *fieldmaskpb.FieldMask, allowed, defaults []string) ([]string, error) {
	paths := mask.GetPaths()
	if len(paths) == 0 {
		return defaults, nil
	}
	seen := map[string]bool{}
	out := make([]string, 0, len(paths))
	for _, p := range paths {
		if !slices.Contains(allowed, p) {
			return nil, apierror.Invalid(field, "path %q cannot be updated; updatable: %s", p, strings.Join(allowed, ", "))
		}
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out, nil
}

// Updatable fields per resource, in the order they are listed in errors.
var (
	RegionUpdatable    = []string{"description", "reserve"}
	SiteUpdatable      = []string{"description"}
	HostUpdatable      = []string{"capacity", "overcommit", "reserved", "labels", "libvirt_uri", "migration_uri"}
	FlavorUpdatable    = []string{"description", "allowed_regions", "resources", "repair"}
	FlavorDefault      = []string{"description"}
	DevserverUpdatable = []string{"sharers", "lifespan", "expire_time"}
	// DevserverCommandUpdatable adds what devfleet itself changes through UpdateDevserver
	// commands: power (StopDevserver, StartDevserver) and the reaper's expiry warning.
	DevserverCommandUpdatable = append(slices.Clone(DevserverUpdatable), "power", "expiry_notice_time")
)
