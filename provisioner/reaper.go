package provisioner

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/devfleet/devfleet/controlplane/state"
	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// reaping is what the reaper does to a temporary devserver now.
type reaping int

const (
	reapNothing reaping = iota
	reapWarn            // tell the owner it expires soon
	reapDelete          // tell the owner it expired, and delete it
)

// reapStep decides for one devserver at now, and says when it next needs a look (zero: never).
func reapStep(d *v1.Devserver, now time.Time, warning time.Duration) (reaping, time.Time) {
	if d.GetLifespan() != v1.Lifespan_LIFESPAN_TEMPORARY || d.GetExpireTime() == nil || state.Deleting(d) {
		return reapNothing, time.Time{}
	}
	expire := d.GetExpireTime().AsTime()
	if !now.Before(expire) {
		if d.GetState() == v1.DevserverState_DEVSERVER_STATE_MIGRATING {
			// Deleted once the move ends (a deletion is refused while it runs).
			return reapNothing, now.Add(time.Minute)
		}
		return reapDelete, time.Time{}
	}
	warnAt := expire.Add(-warning)
	if d.GetExpiryNoticeTime() == nil {
		if !now.Before(warnAt) {
			return reapWarn, expire
		}
		return reapNothing, warnAt
	}
	return reapNothing, expire
}

// reap starts the reaper's step for d if one is due (now is the expiry clock's time, real the
// wall clock's) and returns when d next needs a look (on the real clock; zero: never).
func (r *run) reap(d *v1.Devserver, now, real time.Time) time.Time {
	what, at := reapStep(d, now, r.c.cfg.ExpiryWarning)
	var next time.Time
	if !at.IsZero() {
		next = real.Add(at.Sub(now))
	}
	if what == reapNothing {
		return next
	}
	return earliest(next, r.startWhenDue("reap:"+d.GetName(), real, "reap", func(ctx context.Context) error { return r.reapOne(ctx, d, what) }))
}

func (r *run) reapOne(ctx context.Context, d *v1.Devserver, what reaping) error {
	expire := d.GetExpireTime().AsTime()
	switch what {
	case reapWarn:
		err := r.notify(ctx, d, v1.NoticeKind_NOTICE_KIND_EXPIRING, fmt.Sprintf("expiring-%s-%d", d.GetId(), expire.Unix()),
			fmt.Sprintf("devserver %s expires at %s and will be deleted then; extend it with: devfleet devserver extend %s --by 48h",
				d.GetName(), expire.UTC().Format(time.RFC3339), d.GetName()))
		if err != nil {
			return err
		}
		_, err = r.propose(ctx, updateDevserver(&v1.Devserver{Name: d.GetName(), ExpiryNoticeTime: timestamppb.New(r.c.cfg.Now())}, "expiry_notice_time"))
		return err
	case reapDelete:
		// Check again on the state as it is now: the owner may have extended it meanwhile.
		cur, err := r.c.cfg.Store.View().GetDevserver(d.GetName())
		if err != nil || cur.GetId() != d.GetId() {
			return nil
		}
		if w, _ := reapStep(cur, r.c.cfg.Now(), r.c.cfg.ExpiryWarning); w != reapDelete {
			return nil
		}
		if err := r.notify(ctx, cur, v1.NoticeKind_NOTICE_KIND_EXPIRED, fmt.Sprintf("expired-%s-%d", cur.GetId(), expire.Unix()),
			fmt.Sprintf("devserver %s expired at %s and is being deleted", cur.GetName(), expire.UTC().Format(time.RFC3339))); err != nil {
			return err
		}
		_, err = r.propose(ctx, &fsmv1.Command{Op: &fsmv1.Command_DeleteDevserver{DeleteDevserver: &fsmv1.DeleteDevserver{Name: cur.GetName()}}})
		if refused(err) {
			return nil
		}
		return err
	}
	return nil
}
