package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// procStat is what the benchmark reads of one process in /proc/PID/stat.
type procStat struct {
	pid, ppid int
	comm      string
	cpu       time.Duration // utime + stime
}

// readProcStat parses /proc/PID/stat. The command name (field 2) may hold spaces and
// parentheses, so fields are counted after its last ')'.
func readProcStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, fmt.Errorf("stat of %d: %w", pid, err)
	}
	return parseProcStat(pid, string(b))
}

func parseProcStat(pid int, s string) (procStat, error) {
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return procStat{}, fmt.Errorf("stat of %d: malformed", pid)
	}
	f := strings.Fields(s[end+1:])
	// After the name: state(0) ppid(1) … utime(11) stime(12).
	if len(f) < 13 {
		return procStat{}, fmt.Errorf("stat of %d: short", pid)
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return procStat{}, fmt.Errorf("stat of %d: ppid: %w", pid, err)
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return procStat{}, fmt.Errorf("stat of %d: bad utime/stime", pid)
	}
	return procStat{pid: pid, ppid: ppid, comm: s[open+1 : end],
		cpu: time.Duration(ut+st) * time.Second / clockTicks}, nil //nolint:gosec // G115: clock ticks of one process, far below 2^63
}

// treeCPU is the CPU time of a process and all its live descendants, per command name
// (envoy, infergw, sglang-router, …) so that a report can say where the time went.
type treeCPU map[string]time.Duration

func (t treeCPU) total() time.Duration {
	var sum time.Duration
	for _, d := range t {
		sum += d
	}
	return sum
}

func (t treeCPU) minus(b treeCPU) treeCPU {
	out := treeCPU{}
	for k, v := range t {
		out[k] = v - b[k]
	}
	return out
}

// sampleTree walks /proc once and sums the CPU of root and every process below it.
// Processes that exited before the sample are not counted: the routing layers measured
// here (Envoy, infergw, the peer routers) keep their processes for the whole run.
func sampleTree(root int) (treeCPU, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("process tree: %w", err)
	}
	all := map[int]procStat{}
	children := map[int][]int{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readProcStat(pid)
		if err != nil {
			continue // exited between ReadDir and the read
		}
		all[pid] = st
		children[st.ppid] = append(children[st.ppid], pid)
	}
	if _, ok := all[root]; !ok {
		return nil, fmt.Errorf("process tree: root %d not running", root)
	}
	out := treeCPU{}
	stack := []int{root}
	for len(stack) > 0 {
		pid := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		st := all[pid]
		out[st.comm] += st.cpu
		stack = append(stack, children[pid]...)
	}
	return out, nil
}
