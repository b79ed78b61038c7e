// Package sse decodes a Server-Sent Events stream (the text/event-stream
// format of the WHATWG HTML standard, §9.2 "Server-sent events") as it
// arrives, without net/http: it reads from any io.Reader.
//
// It follows the standard's parsing rules, as openai-python's SSEDecoder does:
//
//   - lines end with "\r\n", "\n" or "\r"; a blank line dispatches the event;
//   - a line starting with ':' is a comment (OpenRouter's
//     ": OPENROUTER PROCESSING" keep-alives); comments are reported through
//     Config.OnComment so a caller can reset its stall timer;
//   - "field: value" — one space after the colon is stripped; a line without a
//     colon is a field with an empty value;
//   - fields "event", "data", "id" and "retry" are understood, others ignored;
//     several data lines join with "\n"; an event with no data line is not
//     dispatched (the standard's rule; openai-python dispatches it); the last event ID persists across events; an id containing
//     NUL is ignored; retry must be ASCII digits;
//   - a UTF-8 byte order mark at the very start is skipped;
//   - at the end of the stream an unfinished event is discarded, and Next
//     reports it with ErrIncomplete so a caller can tell a cut stream from a
//     finished one.
//
// The decoder is incremental and copes with any split of the input across
// reads: an event, a line, a "\r\n" pair or a multi-byte UTF-8 character may
// each arrive in pieces. Lines and events are bounded (Config.MaxLineSize,
// Config.MaxEventSize) and exceeding a bound is an error, not a crash or an
// unbounded allocation.
//
// It is on the per-token hot path of every streamed completion, so it does
// not allocate per event in steady state: an Event's byte slices alias the
// decoder's buffers and stay valid only until the next call to Next. It
// buffers reads itself, as bufio.Reader does, rather than using one:
// bufio cannot split on "\r" as well as "\n", and its fixed buffer would
// need a second, copying line buffer for lines longer than it.
//
// Life cycle:
//
//  1. NewDecoder(r, cfg) (or Reset(r) to reuse one and its buffers);
//  2. call Next until it returns an error; io.EOF means the stream ended
//     cleanly between events;
//  3. any other error is sticky: every later Next returns it again.
//
// A Decoder is used by one goroutine at a time.
package sse
