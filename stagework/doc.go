// Package stagework is QLC's pure stage logic: the four consensus stages and
// their prompts, profiles (which provider and model serve each stage), the
// provider interface with its circuit breaker and rate limits, and the retry
// policy a coordinator applies to provider failures.
//
// It imports neither protoactor nor net/http: a stage's logic is a function of
// its inputs, and package actors performs the effects. The one HTTP edge, the
// OpenAI-compatible client, lives in the subpackage stagework/openai, and its
// wire parser in stagework/sse, so the core stays testable without sockets.
// The built-in simulated model lives in stagework/sim (its configuration,
// SimConfig, here with the rest of the profile file's schema).
package stagework
