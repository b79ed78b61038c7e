// Package client is a Go client of QLC's HTTP API (docs/api.md): runs,
// their event streams with automatic resume, usage, profiles, tokens and
// the admin API. It uses the standard library and coder/websocket, never a
// server package, so the CLI (cmd/qlc), a load generator and the chaos suite can
// share it.
//
// Life cycle:
//
//  1. New(Config) with the gateway's URL and an API key (a tenant key for
//     runs, an admin key for Admin* calls and everyone's usage).
//  2. CreateRun, then Events(ctx, id, "") for its event stream; Stream.Next
//     returns one event at a time and resumes by itself after a dropped
//     connection (Last-Event-ID, including a split delta's "seq:end" id),
//     with bounded backoff. EventsWS reads the same over the run's
//     WebSocket and resumes with ?from_seq=.
//  3. Feed the events to a Fold to rebuild each step's text and the
//     answer, exactly as the gateway's run resource has them.
//
// Every error the API answers is an *APIError (status, type, code,
// message), so callers can test errors.As and the code.
package client
