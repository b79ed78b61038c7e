package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat:
// 100 on every Linux architecture Go supports (sysconf(_SC_CLK_TCK) needs
// cgo; the kernel's ABI fixes it at 100).
const clockTicks = 100

// cpuTime returns the user + system CPU time pid has used (all its
// threads), from /proc/PID/stat; resolution 10 ms.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(b)
}

// parseStatCPU reads utime and stime (fields 14 and 15) of a /proc/PID/stat
// line. The command name (field 2) is in parentheses and may hold spaces
// and parentheses, so fields are counted from the last ')'.
func parseStatCPU(b []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("benchpeers: /proc stat: no command name")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): utime is field 14 = f[11], stime f[12].
	if len(f) < 13 {
		return 0, errors.New("benchpeers: /proc stat: too few fields")
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	s, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("benchpeers: /proc stat: %w", err)
	}
	return time.Duration(u+s) * time.Second / clockTicks, nil
}

// memStatus returns VmRSS (resident now) and VmHWM (the peak resident set
// since the process started) of pid, in bytes, from /proc/PID/status.
func memStatus(pid int) (rss, hwm uint64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	return parseMemStatus(f)
}

func parseMemStatus(f interface{ Read([]byte) (int, error) }) (rss, hwm uint64, err error) {
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || (name != "VmRSS" && name != "VmHWM") {
			continue
		}
		fs := strings.Fields(rest)
		if len(fs) != 2 || fs[1] != "kB" {
			return 0, 0, fmt.Errorf("benchpeers: /proc status: bad %s line", name)
		}
		v, err := strconv.ParseUint(fs[0], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("benchpeers: /proc status: %w", err)
		}
		if name == "VmRSS" {
			rss = v << 10
		} else {
			hwm = v << 10
		}
	}
	if err := sc.Err(); err != nil {
		return 0, 0, err
	}
	if rss == 0 || hwm == 0 {
		return 0, 0, errors.New("benchpeers: /proc status: no VmRSS or VmHWM")
	}
	return rss, hwm, nil
}

// loadAvg returns the 1-minute load average, -1 if it cannot be read.
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return -1
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return -1
	}
	return v
}

// child is a server process the benchmark started; its output goes to a
// log file. The benchmark stops every child it started, by its pid.
type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	log  *os.File
}

// startChild starts bin with args and env (the whole environment), its
// output appended to logPath.
func startChild(name, bin string, args, env []string, logPath string) (*child, error) {
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("benchpeers: start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, done: make(chan struct{}), log: lf}
	go func() { _ = cmd.Wait(); close(c.done) }()
	return c, nil
}

// pid is the child's process id.
func (c *child) pid() int { return c.cmd.Process.Pid }

// exited reports whether the child has ended.
func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and waits up to grace for the child to end, then
// kills it. Stopping twice is a no-op.
func (c *child) stop(grace time.Duration) {
	if !c.exited() {
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(grace):
			_ = c.cmd.Process.Kill()
			<-c.done
		}
	}
	c.log.Close()
}

// cleanEnv is the environment without the QLC_ variables: a gateway the
// benchmark starts takes its settings from flags alone (no admin key, data
// folder or profile file of the caller's shell).
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "QLC_") {
			env = append(env, kv)
		}
	}
	return env
}
