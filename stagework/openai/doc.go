// Package openai is QLC's client for any OpenAI-compatible streaming
// /v1/chat/completions endpoint — OpenAI, OpenRouter, vLLM, Ollama's /v1,
// llama.cpp's server — as a stagework.Provider.
//
// It is the one HTTP edge of package stagework: everything else there is
// pure. One Provider serves one endpoint through one pooled *http.Client
// (keep-alive; HTTP/2 when the server offers it through TLS ALPN), so create
// one per endpoint and share it between stage workers.
//
// Life cycle of a completion:
//
//  1. Stream(ctx, req) posts {model, messages, temperature, max_tokens (if
//     > 0), seed (if != 0), stream: true, stream_options: {include_usage:
//     true}} and returns when the response headers arrive. An HTTP error is
//     returned here as a *stagework.ProviderError: 401/403 ErrAuth, 429
//     ErrRateLimited with RetryAfter (Retry-After as seconds or HTTP-date,
//     or retry-after-ms), 400/404/413/422 ErrBadRequest, 5xx ErrServer, with
//     Message and Code from the OpenAI error body.
//  2. Recv returns one stagework.Chunk per non-empty choices[0].delta.content
//     (Tokens: 1). Role-only and empty deltas, reasoning deltas and comments
//     (": OPENROUTER PROCESSING") are skipped; comments still count as
//     activity for IdleTimeout. Once ctx is cancelled, Recv hands out no
//     more chunks, even ones already buffered. The usage report (the chunk with
//     "choices": [], or usage on a choice chunk as vLLM and llama.cpp may
//     send) is kept: the last one seen wins, never a sum.
//  3. "data: [DONE]" ends the stream: Recv returns io.EOF and Usage is valid.
//     A body that ends after a finish_reason but without [DONE] is accepted
//     too (older llama.cpp). A body that ends with neither is an ErrProtocol
//     "stream cut"; an error object sent after HTTP 200
//     (data: {"error": {...}}, or "event: error") is a ProviderError of the
//     kind its code says (ErrServer by default); bad JSON is ErrProtocol.
//  4. Close releases the stream; call it always (it is idempotent).
//
// Between Recv calls, Buffered (stagework.Buffered) says whether the next
// Recv returns at once because its chunk was read already; a stage worker
// sends such chunks together. It never reads from the connection.
//
// Cancelling ctx at any point — while dialing, during the TLS handshake,
// while waiting for headers or for the first token, mid-stream — aborts the
// request at once: an HTTP/1.1 connection is closed, an HTTP/2 stream is
// reset, and the server sees its request context end. A cancelled ctx is
// reported as ctx.Err() (context.Canceled), not as a ProviderError; a ctx
// whose deadline passed is an ErrTimeout that still matches
// context.DeadlineExceeded.
//
// Text is never split inside a UTF-8 character: the sse package buffers
// whole lines, and JSON strings are decoded whole. The per-chunk JSON is
// read by a small scanner (chunk.go) instead of encoding/json, because it is
// on the per-token path; FuzzParseChunk holds it to encoding/json's meaning.
package openai
