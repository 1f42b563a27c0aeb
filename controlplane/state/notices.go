package state

import (
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/devfleet/devfleet/controlplane/apierror"
	"github.com/devfleet/devfleet/controlplane/validate"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// MaxNoticesPerOwner bounds what the state keeps for one owner: the oldest go first.
const MaxNoticesPerOwner = 100

// CreateNotice records a notice for an owner (the leader stamped its id), dropping the owner's
// oldest beyond MaxNoticesPerOwner.
func (w *WriteTxn) CreateNotice(in *v1.Notice) (*v1.Notice, error) {
	n := proto.Clone(in).(*v1.Notice)
	if n.GetId() == "" {
		return nil, apierror.Invalid("notice.id", "must be stamped by the leader")
	}
	if err := validate.User("notice.owner", n.GetOwner()); err != nil {
		return nil, err
	}
	if _, ok := v1.NoticeKind_name[int32(n.GetKind())]; !ok || n.GetKind() == v1.NoticeKind_NOTICE_KIND_UNSPECIFIED {
		return nil, apierror.Invalid("notice.kind", "unknown kind %d", n.GetKind())
	}
	if err := validate.Name("notice.subject", n.GetSubject()); err != nil {
		return nil, err
	}
	if err := validate.Text("notice.message", n.GetMessage(), validate.MaxReasonLen); err != nil {
		return nil, err
	}
	if w.first(TableNotices, "id", n.GetId()) != nil {
		return nil, apierror.Exists("notice", n.GetId())
	}
	n.CreateTime, n.CreateIndex = w.now, w.index
	if err := w.insert(TableNotices, n); err != nil {
		return nil, err
	}
	if old := w.NoticesOf(n.GetOwner()); len(old) > MaxNoticesPerOwner {
		for _, o := range old[MaxNoticesPerOwner:] {
			if err := w.remove(TableNotices, o); err != nil {
				return nil, err
			}
		}
	}
	return n, nil
}

// Notices returns every notice, by ID.
func (v *View) Notices() []*v1.Notice { return rows[*v1.Notice](v, TableNotices, "id") }

// GetNotice returns a notice or NotFound.
func (v *View) GetNotice(id string) (*v1.Notice, error) {
	if raw := v.first(TableNotices, "id", id); raw != nil {
		return raw.(*v1.Notice), nil
	}
	return nil, apierror.Missing("notice", id)
}

// NoticesOf returns an owner's notices, newest first.
func (v *View) NoticesOf(owner string) []*v1.Notice {
	ns := rows[*v1.Notice](v, TableNotices, "owner", owner)
	slices.SortFunc(ns, func(a, b *v1.Notice) int {
		switch {
		case a.GetCreateIndex() != b.GetCreateIndex():
			return int(int64(b.GetCreateIndex()) - int64(a.GetCreateIndex()))
		case a.GetId() < b.GetId():
			return -1
		case a.GetId() > b.GetId():
			return 1
		}
		return 0
	})
	return ns
}
