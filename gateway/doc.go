// Package gateway is QLC's HTTP edge: the run API (create, status, cancel),
// run event streams over SSE and WebSocket, the OpenAI-compatible
// /v1/chat/completions and /v1/models, the embedded web UI, and the
// operational endpoints /healthz, /readyz and /metrics. The API is described
// in docs/api.md.
//
// Every stream is a Subscription to a run's hub (package actors) pumped into a
// transport (transport.go): SSE (sse.go), WebSocket (ws.go) or an OpenAI
// chunk stream (openai.go). A pump writes whatever is pending in one write and
// one flush; when a reader is behind, consecutive token deltas of a stage are
// coalesced into one event, so a slow link costs fewer, larger writes, and the
// first token is never held back. A reader that falls further behind than the
// hub allows gets a lagged notice and is disconnected; it may resume from the
// sequence number in the notice.
//
// Life cycle:
//
//  1. New validates a Config (an actors.Engine is required) and builds the
//     routes.
//  2. Handler serves them; wrap it in an http.Server with the timeouts from
//     Config (cmd/gateway does).
//  3. Every request gets a clear OpenAI-shaped error on bad input; nothing a
//     request does can affect another run.
package gateway
