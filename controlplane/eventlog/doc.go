// Package eventlog is each node's durable history of the fleet's events — one devfleetv1.Event
// per object a raft entry changed — kept beside the raft data in its own bbolt file, which the
// Watch API serves from. Guarantees:
//
//   - Order: events are stored and delivered in (raft index, n) order; Append refuses anything
//     not after Last, atomically, so re-applying raft entries after a restart cannot duplicate.
//   - Durability: one fsync'd bbolt transaction per Append; Last and the events survive a
//     restart.
//   - No silent gaps: a reader (Read, FromTime, Subscribe, KeyEvents, At, AtTime) whose position
//     is older than what is retained — deleted by age or size, or never received because a
//     snapshot was installed — gets *TooOldError{Oldest} instead of a partial feed. (At's nil,
//     "no retained event", is the exception: see At.)
//   - Subscriptions replay then follow with no gap and no duplicate; Append never waits for a
//     subscriber: a live consumer more than its buffer behind is cut off (ErrSlowConsumer).
//   - Retention (MaxAge, MaxBytes) runs in the background in chunks of at most retainChunk
//     events of retainObjects objects, so Append waits at most one short transaction for it.
//   - Point-in-time reads (KeyEvents, At, AtTime) answer an object's events over a window and
//     its state at a position or a time from a key index kept in Append's own transaction, in
//     a few seeks whatever the history's size, within what is retained. A file written without
//     the index gets it rebuilt at Open.
//
// See DESIGN.md for the layout, the time and key indexes and the contract with the FSM.
package eventlog
