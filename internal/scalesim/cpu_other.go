//go:build !unix

package scalesim

import "time"

// cpuTime is not measured here: the CPU column reads 0.
func cpuTime() time.Duration { return 0 }
