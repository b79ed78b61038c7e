package cli

import (
	"errors"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// cgroupMemoryMax is where cgroup v2 says a container's memory limit.
const cgroupMemoryMax = "/sys/fs/cgroup/memory.max"

// MemoryBudget returns the heap budget for this process: flag (bytes, or
// with a KiB/MiB/GiB suffix) when set; else 90 % of the cgroup v2 memory
// limit read from path, when there is one; else 0 (none). "0" or "none"
// turns it off.
func MemoryBudget(flag, path string) (int64, error) {
	switch strings.TrimSpace(flag) {
	case "":
	case "0", "none":
		return 0, nil
	default:
		n, err := ParseBytes(flag)
		if err != nil || n <= 0 {
			return 0, errors.New("memory budget: want bytes, e.g. 512MiB, or none")
		}
		return n, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, nil // no cgroup v2 here: no budget
	}
	s := strings.TrimSpace(string(b))
	if s == "max" || s == "" {
		return 0, nil
	}
	limit, err := strconv.ParseInt(s, 10, 64)
	if err != nil || limit <= 0 {
		return 0, nil
	}
	return limit / 10 * 9, nil
}

// ParseBytes reads "1048576", "512KiB", "64MiB" or "2GiB".
func ParseBytes(s string) (int64, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = strings.TrimSpace(v), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, errors.New("not a byte size: " + s)
	}
	return n * mult, nil
}

// ApplyMemoryBudget sets the Go runtime's soft memory limit to budget,
// unless GOMEMLIMIT is set (the operator's word wins) or budget is 0.
func ApplyMemoryBudget(budget int64) {
	if budget > 0 && os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(budget)
	}
}

// CgroupMemoryMax is the cgroup v2 file MemoryBudget reads by default.
func CgroupMemoryMax() string { return cgroupMemoryMax }
