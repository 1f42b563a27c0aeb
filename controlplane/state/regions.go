package state

import (
	"google.golang.org/protobuf/proto"

	"github.com/devfleet/devfleet/controlplane/apierror"
	"github.com/devfleet/devfleet/controlplane/validate"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// GetRegion returns a region or NotFound.
func (v *View) GetRegion(name string) (*v1.Region, error) {
	if raw := v.first(TableRegions, "id", name); raw != nil {
		return raw.(*v1.Region), nil
	}
	return nil, apierror.Missing("region", name)
}

// ListRegions returns one page of regions in name order.
func (v *View) ListRegions(p Page) ([]*v1.Region, string) {
	return list[*v1.Region](v, TableRegions, "", "", p, nil)
}

// NewRegion keeps the fields of a create request that a caller may set; the rest is stamped.
func NewRegion(in *v1.Region) *v1.Region {
	r := &v1.Region{Name: in.GetName(), Description: in.GetDescription()}
	if in.GetReserve() != nil {
		r.Reserve = proto.Clone(in.GetReserve()).(*v1.CapacityReserve)
	}
	return r
}

// CreateRegion adds a region; the name must be new.
func (w *WriteTxn) CreateRegion(in *v1.Region) (*v1.Region, error) {
	r := NewRegion(in)
	if err := validate.Region("region", r); err != nil {
		return nil, err
	}
	if w.first(TableRegions, "id", r.Name) != nil {
		return nil, apierror.Exists("region", r.Name)
	}
	r.CreateTime, r.UpdateTime = w.now, w.now
	r.CreateIndex, r.ModifyIndex = w.index, w.index
	return r, w.insert(TableRegions, r)
}

// UpdateRegion changes the fields in paths.
func (w *WriteTxn) UpdateRegion(in *v1.Region, paths []string) (*v1.Region, error) {
	cur, err := w.GetRegion(in.GetName())
	if err != nil {
		return nil, err
	}
	r := proto.Clone(cur).(*v1.Region)
	for _, p := range paths {
		switch p {
		case "description":
			r.Description = in.GetDescription()
		case "reserve":
			r.Reserve = nil
			if in.GetReserve() != nil {
				r.Reserve = proto.Clone(in.GetReserve()).(*v1.CapacityReserve)
			}
		default:
			return nil, apierror.Invalid("update_mask", "path %q cannot be updated on a region", p)
		}
	}
	if err := validate.Region("region", r); err != nil {
		return nil, err
	}
	r.UpdateTime, r.ModifyIndex = w.now, w.index
	return r, w.insert(TableRegions, r)
}

// DeleteRegion removes a region that holds no sites and no devservers.
func (w *WriteTxn) DeleteRegion(name string) error {
	r, err := w.GetRegion(name)
	if err != nil {
		return err
	}
	if names, n := namesWhere[*v1.Site](&w.View, 5, nil, TableSites, "region", name); n > 0 {
		return apierror.Blocked("region %q still has %s; delete them first", name, listing("site", names, n))
	}
	if names, n := w.flavorsAllowing(name); n > 0 {
		return apierror.Blocked("region %q is named in the allowed regions of %s; change them first", name, listing("flavor", names, n))
	}
	if names, n := w.devserversWhere(func(d *v1.Devserver) bool { return d.GetRegion() == name }, 5); n > 0 {
		return apierror.Blocked("region %q still has %s; delete them first", name, listing("devserver", names, n))
	}
	for _, p := range w.Pools() {
		if p.GetRegion() == name {
			return apierror.Blocked("region %q has a container pool of profile %q; set its target to 0 first", name, p.GetProfile())
		}
	}
	return w.remove(TableRegions, r)
}

// Regions returns every region, in name order.
func (v *View) Regions() []*v1.Region { return rows[*v1.Region](v, TableRegions, "id") }
