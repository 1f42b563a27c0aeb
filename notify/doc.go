// Package notify delivers devfleet's owner notices and operator events to external sinks
// (webhooks). The leader runs a Notifier; other nodes do not deliver.
//
// Guarantees, and what they leave to receivers:
//
//   - At least once, not exactly once. A message is retried until a sink accepts it, refuses it
//     for good, or runs out of attempts; an attempt whose answer was lost, and a leader change,
//     can send it again. Receivers dedupe on the message ID (X-Devfleet-Delivery for webhooks),
//     which is stable for a given notice or event.
//   - In order per sink, one message at a time: a sink that is down holds back only its own
//     queue, never another sink's, and never the caller of Enqueue.
//   - Bounded memory, not durability: each sink's queue keeps its newest QueueSize messages and
//     drops the oldest (counted in devfleet_notify_dropped_total). What must not be lost lives in
//     the replicated state, from which a new leader can enqueue again.
//   - Nothing is dropped silently after it was tried: a message that a sink refused or that ran
//     out of attempts becomes a DeadLetter, handed to Config.OnDeadLetter (for the leader to
//     record) and kept in a short in-memory list.
//
// Webhook requests are signed (HMAC-SHA256 over the timestamp and the body); receivers check
// them with Verify. See Webhook for the wire format.
package notify
