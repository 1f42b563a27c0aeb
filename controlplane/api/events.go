package api

import (
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/devfleet/devfleet/controlplane/apierror"
	"github.com/devfleet/devfleet/controlplane/eventlog"
	"github.com/devfleet/devfleet/controlplane/feed"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// Watch defaults.
const (
	defaultHeartbeat = 10 * time.Second
	minHeartbeat     = time.Second
	// watchBuffer is how many events a live watcher may have unread before it is cut off.
	watchBuffer = 1024
)

// Watch implements EventService: this node's history, replayed then followed.
func (s *Server) Watch(req *v1.WatchRequest, stream grpc.ServerStreamingServer[v1.WatchResponse]) error {
	if s.cfg.Events == nil {
		return status.Error(codes.Unavailable, "this node keeps no event history")
	}
	for i, t := range req.GetTopics() {
		if !feed.KnownTopic(t) {
			return apierror.Invalid(fmt.Sprintf("topics[%d]", i), "unknown topic %q", t)
		}
	}
	heartbeat := defaultHeartbeat
	if hb := req.GetHeartbeat(); hb != nil {
		if err := hb.CheckValid(); err != nil || hb.AsDuration() < minHeartbeat {
			return apierror.Invalid("heartbeat", "must be at least %s", minHeartbeat)
		}
		heartbeat = hb.AsDuration()
	}
	log := s.cfg.Events
	var from eventlog.Position
	switch {
	case req.GetAfterIndex() > 0:
		from = eventlog.Position{Index: req.GetAfterIndex(), N: req.GetAfterN()}
	case req.GetSince() != nil:
		if err := req.GetSince().CheckValid(); err != nil {
			return apierror.Invalid("since", "%v", err)
		}
		p, err := log.FromTime(req.GetSince().AsTime())
		if err != nil {
			return watchError(err)
		}
		from = p
	default:
		idx, n := log.Last()
		from = eventlog.Position{Index: idx, N: n}
	}
	filter := eventlog.Filter{Topics: req.GetTopics(), Keys: req.GetKeys()}
	if _, err := log.Read(from, filter, 1); err != nil {
		return watchError(err)
	}
	ctx := stream.Context()
	sub := log.Subscribe(ctx, from, filter, watchBuffer)
	// The heartbeat goes when nothing was sent for its interval. Rather than resetting a timer
	// for every event, the timer that fires checks when the last message went; that time is
	// read once the stream has sent what was waiting (a burst reads the clock once).
	tick := time.NewTimer(heartbeat)
	defer tick.Stop()
	lastSent := time.Now()
	last := from
	var (
		batch   []eventlog.Delivery // the events of the next response
		encoded [][]byte            // their encodings, when batched
		held    eventlog.Delivery   // taken from the subscription, for the next response
		heldEnc []byte
	)
	for {
		batch, encoded = batch[:0], encoded[:0]
		if held.Event != nil {
			batch, encoded = append(batch, held), append(encoded, heldEnc)
			held, heldEnc = eventlog.Delivery{}, nil
		} else {
			select {
			case d, ok := <-sub.C():
				if !ok {
					if err := sub.Err(); errors.Is(err, eventlog.ErrSlowConsumer) {
						return status.Errorf(codes.ResourceExhausted, "watch cut off: more than %d events unread; resume after index %d n %d", watchBuffer, last.Index, last.N)
					} else if ctx.Err() == nil && err != nil {
						return watchError(err)
					}
					return nil
				}
				batch = append(batch, d)
				if req.GetBatch() {
					ev, err := eventBytes(d)
					if err != nil {
						return encodeError(d, err)
					}
					encoded = append(encoded, ev)
				}
			case now := <-tick.C:
				if idle := now.Sub(lastSent); idle < heartbeat {
					tick.Reset(heartbeat - idle)
					continue
				}
				if err := stream.Send(&v1.WatchResponse{Kind: &v1.WatchResponse_Heartbeat{Heartbeat: &v1.Heartbeat{Time: timestamppb.Now()}}}); err != nil {
					return err
				}
				lastSent = time.Now()
				tick.Reset(heartbeat)
				continue
			}
		}
		if req.GetBatch() {
			// What is already waiting goes in the same response; never wait for more. An end of
			// the subscription is seen by the next receive, after this response.
			size := len(encoded[0])
		drain:
			for len(batch) < maxBatchEvents && size < maxBatchBytes {
				select {
				case d, ok := <-sub.C():
					if !ok {
						break drain
					}
					ev, err := eventBytes(d)
					if err != nil {
						return encodeError(d, err)
					}
					if size+len(ev) > maxBatchBytes {
						held, heldEnc = d, ev
						break drain
					}
					batch, encoded = append(batch, d), append(encoded, ev)
					size += len(ev)
				default:
					break drain
				}
			}
		}
		var r *encodedResponse
		if len(batch) == 1 {
			// Every stream of this node sends the same bytes for the event, encoded once.
			var err error
			if r, err = s.encoded.get(batch[0]); err != nil {
				return encodeError(batch[0], err)
			}
		} else {
			r = newEncodedBatch(batch, encoded)
		}
		if err := stream.SendMsg(r); err != nil {
			return err
		}
		e := batch[len(batch)-1].Event
		last = eventlog.Position{Index: e.GetIndex(), N: e.GetN()}
		if held.Event == nil && len(sub.C()) == 0 {
			lastSent = time.Now()
		}
	}
}

// A batch holds at most maxBatchEvents events, and more than maxBatchBytes of encoded events
// only when its first event alone is.
const (
	maxBatchEvents = 256
	maxBatchBytes  = 1 << 20
)

func encodeError(d eventlog.Delivery, err error) error {
	return status.Errorf(codes.Internal, "encode event at index %d n %d: %v", d.Event.GetIndex(), d.Event.GetN(), err)
}

// watchError maps the history's errors to statuses: a position older than the history is
// OutOfRange naming the oldest index kept.
func watchError(err error) error {
	var old *eventlog.TooOldError
	if errors.As(err, &old) {
		return status.Errorf(codes.OutOfRange, "the history starts after that position: the oldest index kept is %d", old.Oldest)
	}
	if errors.Is(err, eventlog.ErrClosed) {
		return status.Error(codes.Unavailable, "this node is stopping")
	}
	return err
}
