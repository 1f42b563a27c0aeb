package state

import (
	"google.golang.org/protobuf/proto"

	"github.com/devfleet/devfleet/controlplane/apierror"
	"github.com/devfleet/devfleet/controlplane/validate"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// GetSite returns a site or NotFound.
func (v *View) GetSite(name string) (*v1.Site, error) {
	if raw := v.first(TableSites, "id", name); raw != nil {
		return raw.(*v1.Site), nil
	}
	return nil, apierror.Missing("site", name)
}

// ListSites returns one page of sites in name order, of one region if region is set.
func (v *View) ListSites(region string, p Page) ([]*v1.Site, string) {
	if region != "" {
		return list[*v1.Site](v, TableSites, "region", region, p, nil)
	}
	return list[*v1.Site](v, TableSites, "", "", p, nil)
}

// NewSite keeps the fields of a create request that a caller may set.
func NewSite(in *v1.Site) *v1.Site {
	return &v1.Site{Name: in.GetName(), Region: in.GetRegion(), Description: in.GetDescription()}
}

// CreateSite adds a site to an existing region.
func (w *WriteTxn) CreateSite(in *v1.Site) (*v1.Site, error) {
	s := NewSite(in)
	if err := validate.Site("site", s); err != nil {
		return nil, err
	}
	if w.first(TableSites, "id", s.Name) != nil {
		return nil, apierror.Exists("site", s.Name)
	}
	if _, err := w.GetRegion(s.Region); err != nil {
		return nil, err
	}
	s.CreateTime, s.UpdateTime = w.now, w.now
	s.CreateIndex, s.ModifyIndex = w.index, w.index
	return s, w.insert(TableSites, s)
}

// UpdateSite changes the fields in paths.
func (w *WriteTxn) UpdateSite(in *v1.Site, paths []string) (*v1.Site, error) {
	cur, err := w.GetSite(in.GetName())
	if err != nil {
		return nil, err
	}
	s := proto.Clone(cur).(*v1.Site)
	for _, p := range paths {
		switch p {
		case "description":
			s.Description = in.GetDescription()
		default:
			return nil, apierror.Invalid("update_mask", "path %q cannot be updated on a site", p)
		}
	}
	if err := validate.Site("site", s); err != nil {
		return nil, err
	}
	s.UpdateTime, s.ModifyIndex = w.now, w.index
	return s, w.insert(TableSites, s)
}

// DeleteSite removes a site that holds no hosts.
func (w *WriteTxn) DeleteSite(name string) error {
	s, err := w.GetSite(name)
	if err != nil {
		return err
	}
	if names, n := namesWhere[*v1.Host](&w.View, 5, nil, TableHosts, "site", name); n > 0 {
		return apierror.Blocked("site %q still has %s; delete them first", name, listing("host", names, n))
	}
	return w.remove(TableSites, s)
}
