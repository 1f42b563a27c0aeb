package provisioner

import (
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/devfleet/devfleet/controlplane/hypervisor"
	"github.com/devfleet/devfleet/controlplane/state"
	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// poolCounts returns the pool's warm (running, unclaimed) and claimed containers.
func poolCounts(v *state.View) (warm, claimed []*v1.Container) {
	for _, c := range v.ContainersIn("eu", "www") {
		switch {
		case state.Warm(c):
			warm = append(warm, c)
		case c.GetClaimedBy() != "" && c.GetState() != v1.ContainerState_CONTAINER_STATE_DELETED:
			claimed = append(claimed, c)
		}
	}
	return warm, claimed
}

func guests(t *testing.T, f *fixture) int {
	t.Helper()
	n := 0
	for _, h := range []string{"m1", "m2"} {
		doms, err := f.host(h).List(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range doms {
			if d.Metadata.Kind == hypervisor.InstanceContainer {
				n++
			}
		}
	}
	return n
}

// A pool fills to its target with running guests spread over hosts; a claim takes a warm one
// and the pool refills; a release removes the guest; an expired claim is reaped with a notice;
// a warm container whose guest vanishes is replaced.
func TestPoolsFillClaimReleaseExpire(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.ok(&fsmv1.Command{Op: &fsmv1.Command_CreateProfile{CreateProfile: &fsmv1.CreateProfile{Profile: &v1.ContainerProfile{
		Name: "www", Vcpus: 1, MemoryMib: 1024, Ttl: durationpb.New(time.Hour)}}}})
	f.ok(&fsmv1.Command{Op: &fsmv1.Command_SetPool{SetPool: &fsmv1.SetPool{Pool: &v1.ContainerPool{Region: "eu", Profile: "www", Target: 3}}}})
	f.eventually("3 warm containers", func(v *state.View) bool { w, _ := poolCounts(v); return len(w) == 3 })
	if n := guests(t, f); n != 3 {
		t.Fatalf("%d container guests, want 3", n)
	}
	hosts := map[string]bool{}
	warm, _ := poolCounts(f.store.View())
	for _, c := range warm {
		hosts[c.GetHost()] = true
	}
	if len(hosts) != 2 {
		t.Fatalf("warm containers not spread over both hosts: %v", hosts)
	}

	claimed := f.ok(&fsmv1.Command{Op: &fsmv1.Command_ClaimContainer{ClaimContainer: &fsmv1.ClaimContainer{Name: warm[0].GetName(), Owner: "alice"}}}).(*v1.Container)
	if claimed.GetExpireTime() == nil || claimed.GetClaimedBy() != "alice" {
		t.Fatalf("claim: %v", claimed)
	}
	f.eventually("the pool refilled", func(v *state.View) bool { w, c := poolCounts(v); return len(w) == 3 && len(c) == 1 })

	f.ok(release(warm[1].GetName(), "test"))
	f.eventually("a released container purged and replaced", func(v *state.View) bool {
		_, err := v.GetContainer(warm[1].GetName())
		w, _ := poolCounts(v)
		return err != nil && len(w) == 3
	})
	if n := guests(t, f); n != 4 {
		t.Fatalf("%d container guests after a release, want 4 (3 warm, 1 claimed)", n)
	}

	f.clock.advance(2 * time.Hour)
	f.eventually("the expired claim reaped", func(v *state.View) bool {
		_, err := v.GetContainer(claimed.GetName())
		return err != nil
	})
	if n := notices(f.store.View(), v1.NoticeKind_NOTICE_KIND_EXPIRED); len(n) != 1 || n[0].GetSubject() != claimed.GetName() {
		t.Fatalf("expiry notices: %v", n)
	}

	warm, _ = poolCounts(f.store.View())
	if err := f.host(warm[0].GetHost()).Vanish(warm[0].GetName()); err != nil {
		t.Fatal(err)
	}
	f.eventually("the vanished warm container replaced", func(v *state.View) bool {
		_, err := v.GetContainer(warm[0].GetName())
		w, _ := poolCounts(v)
		return err != nil && len(w) == 3
	})

	f.ok(&fsmv1.Command{Op: &fsmv1.Command_SetPool{SetPool: &fsmv1.SetPool{Pool: &v1.ContainerPool{Region: "eu", Profile: "www", Target: 1}}}})
	f.eventually("the pool shrunk", func(v *state.View) bool { return len(v.ContainersIn("eu", "www")) == 1 })
	if n := guests(t, f); n != 1 {
		t.Fatalf("%d container guests after shrinking, want 1", n)
	}
	var vcpus int64
	for _, h := range []string{"m1", "m2"} {
		hh, _ := f.store.View().GetHost(h)
		vcpus += hh.GetAllocated().GetVcpus()
	}
	if vcpus != 1 {
		t.Fatalf("allocated vCPUs %d, want 1", vcpus)
	}

	// Target 0 removes the pool; its warm containers go with it.
	f.ok(&fsmv1.Command{Op: &fsmv1.Command_SetPool{SetPool: &fsmv1.SetPool{Pool: &v1.ContainerPool{Region: "eu", Profile: "www", Target: 0}}}})
	f.eventually("the removed pool's containers gone", func(v *state.View) bool { return len(v.ContainersIn("eu", "www")) == 0 })
	if n := guests(t, f); n != 0 {
		t.Fatalf("%d container guests after the pool was removed, want 0", n)
	}
}
