//go:build race

package scalesim

// raceOn: the race detector slows every member several times; the
// membership test then runs fewer of them.
const raceOn = true
