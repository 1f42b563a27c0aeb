package state

import (
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/devfleet/devfleet/controlplane/apierror"
	"github.com/devfleet/devfleet/controlplane/validate"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// GetFlavor returns a flavor or NotFound.
func (v *View) GetFlavor(name string) (*v1.Flavor, error) {
	if raw := v.first(TableFlavors, "id", name); raw != nil {
		return raw.(*v1.Flavor), nil
	}
	return nil, apierror.Missing("flavor", name)
}

// ListFlavors returns one page of flavors in name order.
func (v *View) ListFlavors(p Page) ([]*v1.Flavor, string) {
	return list[*v1.Flavor](v, TableFlavors, "", "", p, nil)
}

// NewFlavor keeps the fields of a create request that a caller may set; kind defaults to VM.
func NewFlavor(in *v1.Flavor) *v1.Flavor {
	f := &v1.Flavor{Name: in.GetName(), Kind: in.GetKind(), Description: in.GetDescription(), AllowedRegions: slices.Clone(in.GetAllowedRegions()), Repair: in.GetRepair()}
	if in.GetResources() != nil {
		f.Resources = proto.Clone(in.GetResources()).(*v1.Resources)
	}
	if f.Kind == v1.FlavorKind_FLAVOR_KIND_UNSPECIFIED {
		f.Kind = v1.FlavorKind_FLAVOR_KIND_VM
	}
	return f
}

// CreateFlavor adds a flavor.
func (w *WriteTxn) CreateFlavor(in *v1.Flavor) (*v1.Flavor, error) {
	f := NewFlavor(in)
	if err := validate.Flavor("flavor", f); err != nil {
		return nil, err
	}
	if w.first(TableFlavors, "id", f.Name) != nil {
		return nil, apierror.Exists("flavor", f.Name)
	}
	if err := w.regionsExist(f.GetAllowedRegions()); err != nil {
		return nil, err
	}
	f.CreateTime, f.UpdateTime = w.now, w.now
	f.CreateIndex, f.ModifyIndex = w.index, w.index
	return f, w.insert(TableFlavors, f)
}

// UpdateFlavor changes the fields in paths. Resources change only while no devserver uses the
// flavor: a resize of running devservers is a migration, not an edit.
func (w *WriteTxn) UpdateFlavor(in *v1.Flavor, paths []string) (*v1.Flavor, error) {
	cur, err := w.GetFlavor(in.GetName())
	if err != nil {
		return nil, err
	}
	f := proto.Clone(cur).(*v1.Flavor)
	for _, p := range paths {
		switch p {
		case "repair":
			f.Repair = in.GetRepair()
		case "description":
			f.Description = in.GetDescription()
		case "allowed_regions":
			f.AllowedRegions = slices.Clone(in.GetAllowedRegions())
			if err := w.regionsExist(f.AllowedRegions); err != nil {
				return nil, err
			}
			if names, n := w.devserversWhere(func(d *v1.Devserver) bool {
				return d.GetFlavor() == f.Name && !FlavorAllowedIn(f, d.GetRegion())
			}, 5); n > 0 {
				return nil, apierror.Blocked("flavor %q has %s in regions the new list leaves out", f.Name, listing("devserver", names, n))
			}
		case "resources":
			if names, n := w.devserversWhere(func(d *v1.Devserver) bool { return d.GetFlavor() == f.Name }, 5); n > 0 {
				return nil, apierror.Blocked("flavor %q is used by %s; its resources cannot change", f.Name, listing("devserver", names, n))
			}
			f.Resources = resourcesOrZero(in.GetResources())
		default:
			return nil, apierror.Invalid("update_mask", "path %q cannot be updated on a flavor", p)
		}
	}
	if err := validate.Flavor("flavor", f); err != nil {
		return nil, err
	}
	f.UpdateTime, f.ModifyIndex = w.now, w.index
	return f, w.insert(TableFlavors, f)
}

// DeleteFlavor removes a flavor no devserver uses.
func (w *WriteTxn) DeleteFlavor(name string) error {
	f, err := w.GetFlavor(name)
	if err != nil {
		return err
	}
	if names, n := w.devserversWhere(func(d *v1.Devserver) bool { return d.GetFlavor() == name }, 5); n > 0 {
		return apierror.Blocked("flavor %q is used by %s", name, listing("devserver", names, n))
	}
	return w.remove(TableFlavors, f)
}

func (v *View) regionsExist(names []string) error {
	for _, r := range names {
		if _, err := v.GetRegion(r); err != nil {
			return err
		}
	}
	return nil
}

// flavorsAllowing returns up to 5 names of the flavors that list region as allowed, and their number.
func (v *View) flavorsAllowing(region string) ([]string, int) {
	return namesWhere(v, 5, func(f *v1.Flavor) bool { return slices.Contains(f.GetAllowedRegions(), region) }, TableFlavors, "id")
}

// Flavors returns every flavor, in name order.
func (v *View) Flavors() []*v1.Flavor { return rows[*v1.Flavor](v, TableFlavors, "id") }
