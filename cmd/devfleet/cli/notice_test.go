package cli

import (
	"context"
	"reflect"
	"testing"
	"time"

	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

func TestNotices(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	header := []string{"TIME", "KIND", "SUBJECT", "MESSAGE"}

	// An owner without notices: the header alone, exit 0; JSON is the empty response.
	for _, args := range [][]string{{"--owner", "bob"}, {"--owner", "bob", "--stale"}, {"--owner", "bob", "--limit", "5"}} {
		if got := rows(f.ok(append([]string{"notice", "list"}, args...)...)); !reflect.DeepEqual(got, [][]string{header}) {
			t.Errorf("notice list %v = %q, want the header only", args, got)
		}
	}
	if got := decode[map[string]any](t, f.ok("-o", "json", "notice", "list", "--owner", "bob")); len(got) != 0 {
		t.Errorf("notice list -o json without notices = %v, want {}", got)
	}

	// The server checks the owner and the limit; the error names the field.
	f.fail(1, []string{"notice", "list", "--owner", "Bob"}, `owner: "Bob" must be a user name`, "(InvalidArgument)")
	f.fail(1, []string{"notice", "list", "--owner", ""}, "owner: must not be empty", "(InvalidArgument)")
	f.fail(1, []string{"notice", "list", "--owner", "bob", "--limit", "101"}, "limit: must be between 0 and 100, got 101", "(InvalidArgument)")

	// Notices recorded the way the provisioner records them (no API writes them).
	leader := f.c.WaitLeader()
	for _, n := range []*v1.Notice{
		{Id: "lost-1", Owner: "bob", Kind: v1.NoticeKind_NOTICE_KIND_LOST, Subject: "bob-dev", Message: "devserver bob-dev is lost: domain vanished"},
		{Id: "recreated-1", Owner: "bob", Kind: v1.NoticeKind_NOTICE_KIND_RECREATED, Subject: "bob-dev", Message: "devserver bob-dev was recreated on fra1-h2"},
		{Id: "expiring-1", Owner: "carol", Kind: v1.NoticeKind_NOTICE_KIND_EXPIRING, Subject: "carol-dev", Message: "expires soon"},
	} {
		res, err := leader.Server.Node().Propose(context.Background(), &fsmv1.Command{Op: &fsmv1.Command_CreateNotice{CreateNotice: &fsmv1.CreateNotice{Notice: n}}})
		if err == nil {
			err = res.Err
		}
		if err != nil {
			t.Fatalf("recording notice %s: %v", n.GetId(), err)
		}
	}

	got := rows(f.ok("notice", "list", "--owner", "bob"))
	if len(got) != 3 || !reflect.DeepEqual(got[0], header) {
		t.Fatalf("notice list --owner bob = %q, want the header and 2 notices", got)
	}
	// Newest first, kinds in short form, the message whole in the last column.
	wantRows := [][]string{
		{"recreated", "bob-dev", "devserver", "bob-dev", "was", "recreated", "on", "fra1-h2"},
		{"lost", "bob-dev", "devserver", "bob-dev", "is", "lost:", "domain", "vanished"},
	}
	for i, want := range wantRows {
		if _, err := time.Parse(time.RFC3339, got[i+1][0]); err != nil {
			t.Errorf("notice list row %d: TIME %q: %v", i+1, got[i+1][0], err)
		}
		if !reflect.DeepEqual(got[i+1][1:], want) {
			t.Errorf("notice list row %d = %q, want a time then %q", i+1, got[i+1], want)
		}
	}
	if got := rows(f.ok("notice", "list", "--owner", "bob", "--limit", "1")); len(got) != 2 || got[1][1] != "recreated" {
		t.Errorf("notice list --limit 1 = %q, want the newest only", got)
	}
	if got := rows(f.ok("notice", "list", "--owner", "carol", "--stale")); len(got) != 2 || got[1][1] != "expiring" || got[1][2] != "carol-dev" {
		t.Errorf("notice list --owner carol = %q", got)
	}

	resp := decode[map[string][]map[string]any](t, f.ok("-o", "json", "notice", "list", "--owner", "bob"))
	ns := resp["notices"]
	if len(ns) != 2 || ns[0]["id"] != "recreated-1" || ns[0]["kind"] != "NOTICE_KIND_RECREATED" || ns[0]["owner"] != "bob" ||
		ns[1]["kind"] != "NOTICE_KIND_LOST" || ns[1]["message"] != "devserver bob-dev is lost: domain vanished" || ns[1]["create_time"] == nil {
		t.Errorf("notice list -o json = %v", resp)
	}
}
