package state

import (
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/devfleet/devfleet/controlplane/apierror"
	"github.com/devfleet/devfleet/controlplane/validate"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// MaxDeadLetters bounds the dead letters the state keeps: the oldest go first.
const MaxDeadLetters = 1000

func deadLetterKey(sink, id string) string { return sink + "/" + id }

// DeadLetters returns the notifications not delivered, oldest first.
func (v *View) DeadLetters() []*v1.DeadLetter {
	out := rows[*v1.DeadLetter](v, TableDeadLetters, "id")
	slices.SortFunc(out, func(a, b *v1.DeadLetter) int { return int(int64(a.GetCreateIndex()) - int64(b.GetCreateIndex())) })
	return out
}

// RecordDeadLetter records a notification a sink did not take; a second record of the same
// message and sink replaces the first. Beyond MaxDeadLetters the oldest go.
func (w *WriteTxn) RecordDeadLetter(in *v1.DeadLetter) (*v1.DeadLetter, error) {
	dl := proto.Clone(in).(*v1.DeadLetter)
	if dl.GetSink() == "" || dl.GetMessageId() == "" {
		return nil, apierror.Invalid("dead_letter", "sink and message_id are required")
	}
	if err := validate.Text("dead_letter.text", dl.GetText(), validate.MaxReasonLen); err != nil {
		return nil, err
	}
	if err := validate.Text("dead_letter.last_error", dl.GetLastError(), validate.MaxReasonLen); err != nil {
		return nil, err
	}
	dl.CreateIndex = w.index
	if dl.GetTime() == nil {
		dl.Time = w.now
	}
	if err := w.insert(TableDeadLetters, dl); err != nil {
		return nil, err
	}
	if all := w.DeadLetters(); len(all) > MaxDeadLetters {
		for _, old := range all[:len(all)-MaxDeadLetters] {
			if err := w.remove(TableDeadLetters, old); err != nil {
				return nil, err
			}
		}
	}
	return dl, nil
}
