// Package alert turns guard decisions into notifications: subscriptions
// kept in JetStream KV, an evaluator that counts matching decisions in
// windows, and a deliverer that sends each fired alert once over a signed
// webhook, a Slack-compatible webhook or the tenant's NATS alert subject.
//
// # Subscriptions
//
// A subscription belongs to one project. It matches decisions with the
// filter model of the traces page (package filter), fires when at least
// Threshold matches of one group arrive within Window, groups by nothing,
// user, session or policy, and keeps each group quiet for Cooldown after
// an alert. Subscriptions live in the GUARD_ALERT_SUBS bucket under
// <account>.<project>.<sub_id>; every token obeys the id rules, so a key
// can neither gain a level nor a wildcard, and every Store method takes
// the store.Scope that authorization handed out. The HMAC secret is
// stored with the subscription, returned once by Create, and never
// marshalled with it.
//
// # Evaluation, replicas and restarts
//
// Replicas share one durable pull consumer on the decisions stream, so
// each decision goes to one replica, and one set of windows: the state of
// a (subscription, group) is a KV entry (GUARD_ALERT_STATE) changed only
// by compare-and-set on its revision. A replica applies a match to the
// window it last saw; if another replica wrote first the update fails, the
// replica reads the winner's state and applies the match again. So every
// match counts once, whichever replica received it, and exactly one write
// moves a window over its threshold: that replica fires. Windows are
// measured in stream arrival time, which a replay or a late replica sees
// the same as the first.
//
// A decision is acknowledged only after every window it touches is
// stored and every alert it fired is in the outbox. A replica that dies in
// between leaves the decision unacknowledged; it is redelivered after the
// ack wait. Each window remembers the stream sequences it applied (the
// last 256), so the redelivery is not counted again, and the window keeps
// its latest alert with the sequence that fired it, so the redelivery
// hands that alert on again instead of losing it.
//
// Because windows and cooldowns are in KV, a restart neither forgets a
// half-filled window nor starts a storm: the durable consumer resumes
// after the last acknowledged decision, counts go on from the stored
// state, and cooldowns hold. A first start begins at new decisions, so
// history already in the stream fires nothing.
//
// # Delivery
//
// A fired alert goes to GUARD_ALERT_OUTBOX, a work-queue stream outside
// guard.v1.>, which no guard credential may publish to. Replicas share a
// durable consumer on it. Before sending, a replica claims the alert id
// with KV Create in GUARD_ALERT_SENT; only one Create can succeed, so a
// repeated alert (a redelivery, a republish) is dropped. The alert id is
// derived from the subscription, its version, the group and the firing
// decision, so it is the same on every path, and it travels as the
// Idempotency-Key header: a receiver can drop a repeat too. A claim older
// than the lease (the longest a send can take) belongs to a dead replica
// and is taken over.
//
// Webhook bodies are signed: X-Guard-Signature is "v1=" and the hex
// HMAC-SHA256 of "<X-Guard-Timestamp>.<body>" keyed with the secret.
// Sends retry with exponential backoff and jitter up to a limit; the
// outcome, failed or not, is recorded in GUARD_ALERT_DELIVERIES, whose
// history keeps the last DeliveryHistory per subscription. Every address
// dialled is checked by a Guard at connect time and redirects are not
// followed, so a webhook can reach neither the machine, nor a private
// network, nor cloud metadata, unless an operator allows a range.
package alert
