//go:build race

package main

// raceEnabled: the binaries under test are race-built too (about ten times
// slower), so load tests scale their bursts down.
const raceEnabled = true

func init() { buildFlags = append(buildFlags, "-race") }
