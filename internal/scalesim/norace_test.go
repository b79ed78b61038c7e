//go:build !race

package scalesim

const raceOn = false
