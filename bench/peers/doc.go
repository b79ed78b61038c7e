// Command bench-peers (make bench-peers) measures QLC side by side with a
// peer fan-out server, Centrifugo, and a plain streaming proxy,
// httputil.ReverseProxy, with the same client against each (issue 11;
// BENCHMARKS.md). Everything runs on loopback; every loop is bounded in
// count and in time (-budget for the whole run, -deadline for a round).
//
// It lives in bench/peers rather than cmd/: it is a tool, not a product
// binary (`make build` builds ./cmd/... into bin/ and the images), and it
// needs nothing of cmd/internal — the gateway's address file is three
// lines of JSON to read.
//
// Fan-out: one stream to N SSE readers (-readers 100,1000), the source
// paced (-rate 100 tokens/s) or at full speed. A round:
//
//  1. start a fresh server: QLC's cmd/gateway -local on port 0 with
//     -addr-file and a generated profile file, or Centrifugo with a
//     generated config (HMAC secret and API key made at start, in a 0600
//     file in a private folder, removed after);
//  2. idle RSS (VmRSS) after -settle;
//  3. QLC: POST /v1/runs on the peers-paced or peers-full profile, whose
//     generator waits a lead-in before its first token; readers GET
//     /v1/runs/{id}/events. Centrifugo: readers GET /connection/uni_sse
//     with a JWT whose "channels" claim subscribes them;
//  4. once every reader is subscribed: server CPU (utime+stime from
//     /proc/PID/stat); Centrifugo's publisher then posts one message per
//     token to /api/publish (paced) or /api/batch (full speed), each with
//     its send time;
//  5. every reader reads to the end event (QLC run_completed; the
//     publisher's last message), or is dropped (QLC "lagged", Centrifugo
//     closing a slow client), or meets the deadline;
//  6. server CPU again, peak RSS (VmHWM), readers leave, RSS after -settle,
//     the server stops.
//
// Figures: deliveries/s = token deliveries after the warm-up, all readers,
// ÷ (last delivery − the first measured token's source time); latency =
// receive time − the token's source time: for QLC the event's "time", the
// moment the run's coordinator logged it (after the simulated model
// produced it and the stage worker passed it on), for Centrifugo the
// moment the publisher sent it to the HTTP API (before the API call, so it
// includes that call); one sample per frame (a QLC frame that coalesces
// several deltas for a reader that fell behind counts once, timed by its
// last token); server CPU per delivery = CPU over the round ÷ every token
// delivered (warm-up included). For QLC the server is also the source (the
// simulated model, the run's actors and its ledger run in the process
// measured); Centrifugo's source is this program, its API work is counted.
//
// TTFT: a zero-latency OpenAI-compatible mock in this process (each chunk
// written and flushed on its own); answers one at a time direct, through
// httputil.ReverseProxy{FlushInterval: -1} (the floor), and through QLC's
// /v1/chat/completions on a profile whose last stage (peers-one; the first
// three are one-token simulated stages) or whose four stages (peers-four;
// its floor is four requests in a row through the proxy) use the mock, at
// several answer lengths (-ttft-tokens 50,1000). TTFT = request sent →
// first chunk with non-empty content (not the role chunk); E2E = → [DONE].
// What QLC adds is paired with the floor of the same shape and length
// round by round; the added cost per token is the slope of the added E2E
// (and TTFT) between the shortest and the longest answer, per token the
// upstream streamed.
//
// Rounds of every configuration (-rounds) run interleaved in random order
// across targets (-seed), as gwbench does; tables give the median and the
// range. Results: markdown to stdout and -out, every round's figures to
// -json.
package main
