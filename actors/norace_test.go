//go:build !race

package actors

// raceEnabled: the test binary is race-built.
const raceEnabled = false
