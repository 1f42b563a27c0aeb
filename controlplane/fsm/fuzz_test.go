package fsm

import (
	"bytes"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

func FuzzDecodeBatch(f *testing.F) {
	good, _ := EncodeBatch([]*fsmv1.Command{cRegion("eu"), cSite("eu-1", "eu"), cHost("h1", "eu-1")})
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte{1})
	f.Add([]byte{2, 0x0a, 0x00})
	f.Add([]byte{1, 0x0a, 0x05, 0xa2, 0x01, 0x02, 0x0a, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := DecodeBatch(data)
		if err != nil {
			return
		}
		again, err := EncodeBatch(b.GetCommands())
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		b2, err := DecodeBatch(again)
		// Unknown fields of the envelope itself are not carried over; the commands must be.
		if err != nil || !proto.Equal(&fsmv1.Batch{Commands: b.GetCommands()}, b2) {
			t.Fatalf("decode(encode(decode(x))) differs: %v", err)
		}
	})
}

// FuzzApplyCommands applies a command sequence drawn from the fuzz input over a small universe
// of names, so that references collide, and checks that nothing panics, the invariants hold
// after every command, a rejected command changes nothing, and snapshot/restore round-trips.
func FuzzApplyCommands(f *testing.F) {
	f.Add([]byte{0, 0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0})
	f.Add([]byte{0, 1, 1, 1, 2, 1, 3, 1, 4, 1, 6, 1, 7, 2, 8, 3, 9, 1, 10, 2, 11, 0, 12, 1})
	f.Add(bytes.Repeat([]byte{0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 13, 7, 14, 8}, 4))
	f.Fuzz(func(t *testing.T, data []byte) {
		h := newHarness(t)
		for i := 0; i+1 < len(data) && i < 400; i += 2 {
			cmd := fuzzCommand(data[i], data[i+1], i)
			before := h.persisted()
			r := h.apply(cmd)
			if err := h.fsm.Store().View().CheckInvariants(); err != nil {
				t.Fatalf("after %s: %v", TypeName(cmd), err)
			}
			if r.Err != nil && !bytes.Equal(before, h.persisted()) {
				t.Fatalf("rejected %s changed the state", TypeName(cmd))
			}
		}
		snap := h.persisted()

		// The same commands in multi-command entries (one memdb transaction each, or one per
		// command after a rejection) end in the same state as one command at a time at the
		// same raft indexes.
		batched, single := newHarness(t), newHarness(t)
		for i, idx := 0, uint64(1); i+1 < len(data) && i < 400; idx++ {
			n := 1 + int(data[i])%5
			var cmds []*fsmv1.Command
			for ; n > 0 && i+1 < len(data) && i < 400; n, i = n-1, i+2 {
				cmd := fuzzCommand(data[i], data[i+1], i)
				cmd.TimeUnixNano = epoch.Add(time.Duration(idx) * time.Second).UnixNano()
				cmds = append(cmds, cmd)
			}
			entry, err := EncodeBatch(cmds)
			if err != nil {
				t.Fatal(err)
			}
			res := batched.fsm.Apply(&raft.Log{Index: idx, Data: entry}).([]Result)
			for j, cmd := range cmds {
				want := single.fsm.ApplyCommand(idx, proto.Clone(cmd).(*fsmv1.Command))
				if (want.Err == nil) != (res[j].Err == nil) {
					t.Fatalf("entry %d command %d (%s): batched err %v, alone err %v", idx, j, TypeName(cmd), res[j].Err, want.Err)
				}
			}
		}
		if !bytes.Equal(batched.persisted(), single.persisted()) {
			t.Fatal("batched apply differs from one command at a time")
		}

		fresh := newHarness(t)
		if err := fresh.fsm.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(snap, fresh.persisted()) {
			t.Fatal("snapshot does not round-trip")
		}
	})
}

func fuzzCommand(op, arg byte, seq int) *fsmv1.Command {
	regions := []string{"eu", "us", "ap"}
	sites := []string{"eu-1", "us-1", "ap-1", "eu-2"}
	hosts := []string{"h1", "h2", "h3"}
	flavors := []string{"small", "large"}
	devs := []string{"d1", "d2", "d3"}
	pick := func(names []string) string { return names[int(arg)%len(names)] }
	other := func(names []string) string { return names[int(arg/7)%len(names)] }
	switch op % 16 {
	case 0:
		return cRegion(pick(regions))
	case 1:
		return cSite(pick(sites), other(regions))
	case 2:
		return cHost(pick(hosts), other(sites))
	case 3:
		return cFlavor(pick(flavors), int64(arg%8), int64(arg)*512)
	case 4:
		return cDevserver(pick(devs), "alice", other(flavors), other(regions), "", fmt.Sprintf("id-%d", seq))
	case 5:
		return cDevserver(pick(devs), "bob", other(flavors), other(regions), other(hosts), fmt.Sprintf("id-%d-b", seq))
	case 6:
		return deleteCmd("region", pick(regions))
	case 7:
		return deleteCmd("site", pick(sites))
	case 8:
		return deleteCmd("host", pick(hosts))
	case 9:
		return deleteCmd("flavor", pick(flavors))
	case 10:
		return deleteCmd("devserver", pick(devs))
	case 11:
		return cordon(pick(hosts), "maintenance")
	case 12:
		return uncordon(pick(hosts))
	case 13:
		return &fsmv1.Command{Op: &fsmv1.Command_UpdateHost{UpdateHost: &fsmv1.UpdateHost{
			Host: &v1.Host{Name: pick(hosts), Capacity: res(int64(arg%5), 1024, 0, 0), Reserved: res(2, 0, 0, 0)},
		}}}
	case 14:
		return &fsmv1.Command{Op: &fsmv1.Command_UpdateDevserver{UpdateDevserver: &fsmv1.UpdateDevserver{
			Devserver: &v1.Devserver{Name: pick(devs), Lifespan: v1.Lifespan(arg % 3), ExpireTime: timestamppb.New(epoch), Sharers: []string{other([]string{"carol", "alice"})}},
		}}}
	default:
		return &fsmv1.Command{Op: &fsmv1.Command_UpdateFlavor{UpdateFlavor: &fsmv1.UpdateFlavor{
			Flavor: &v1.Flavor{Name: pick(flavors), Resources: res(2, int64(arg)*64, 0, 0)}, UpdateMask: mask("resources"),
		}}}
	}
}
