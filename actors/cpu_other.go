//go:build !unix

package actors

import "time"

// processCPUTime is not measured here: the stage capacity follows its
// attempts' waits only.
func processCPUTime() (time.Duration, bool) { return 0, false }
