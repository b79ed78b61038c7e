// Package discover finds the OpenAI-compatible model servers running on
// this machine — Ollama, a llama.cpp server, vLLM, LM Studio — and turns
// what it found into profile-file additions: one provider per server and
// the generated profiles local, local-moa, local-council and local-vote.
//
// It looks on the loopback interface only (127.0.0.1 and ::1): Config
// refuses any other host, and the HTTP client it uses refuses to dial,
// follow a redirect or use a proxy to anything but a loopback address. A
// probe is a GET of a model list (Ollama's /api/tags, else /v1/models) with
// a short deadline; all probes run at once, bounded by Config.Parallel.
//
// Life cycle:
//
//  1. Discover(ctx, cfg) probes every host and port of cfg and returns a
//     Result: the servers that answered with a model list, and the ones
//     skipped (QLC itself, a server asking for a key, a slow one).
//  2. Apply(stages, servers) adds the providers and profiles to a
//     stagework.Config, with names that do not clash with its own, and
//     validates the result; the config is unchanged if that fails.
//  3. The caller builds provider clients from the config and starts its
//     engine, as for a profile file.
package discover
