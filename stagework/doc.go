// Package stagework is QLC's pure stage logic: the four consensus stages and
// their prompts, profiles (which provider and model serve each stage), the
// provider interface and the built-in simulated provider, and the retry
// policy a coordinator applies to provider failures.
//
// It imports neither protoactor nor net/http: a stage's logic is a function of
// its inputs, and package actors performs the effects. The one HTTP edge, the
// OpenAI-compatible client, lives in the subpackage stagework/openai, and its
// wire parser in stagework/sse, so the core stays testable without sockets.
package stagework
