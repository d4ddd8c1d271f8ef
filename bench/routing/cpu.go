package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, 100 on every Linux the benchmark targets (sysconf(_SC_CLK_TCK)).
const clockTicks = 100

// cpuSample is a point-in-time reading of CPU time: this process (gateway, picker, sims
// and load tester), the Envoy child, and the whole machine.
type cpuSample struct {
	at         time.Time
	self       time.Duration
	envoy      time.Duration
	machBusy   uint64 // jiffies
	machTotal  uint64
	machineErr error
}

// procCPU reads utime+stime of a process from /proc/PID/stat.
func procCPU(pid string) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, fmt.Errorf("cpu of %s: %w", pid, err)
	}
	// The command name (field 2) may contain spaces: fields are counted after its ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("cpu of %s: malformed stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("cpu of %s: short stat", pid)
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("cpu of %s: bad utime/stime", pid)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil //nolint:gosec // G115: clock ticks of one benchmark process, far below 2^63
}

// machineCPU reads busy and total jiffies from the first line of /proc/stat.
func machineCPU() (busy, total uint64, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, fmt.Errorf("machine cpu: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0, fmt.Errorf("machine cpu: unexpected /proc/stat line %q", line)
	}
	for i, v := range f[1:] {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("machine cpu: %w", err)
		}
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total, nil
}

func takeCPUSample(envoyPid int) cpuSample {
	s := cpuSample{at: time.Now()}
	s.self, _ = procCPU("self")
	if envoyPid > 0 {
		s.envoy, _ = procCPU(strconv.Itoa(envoyPid))
	}
	s.machBusy, s.machTotal, s.machineErr = machineCPU()
	return s
}

// CPUUsage is what a run cost: cores used on average by the bench process and by Envoy, and
// how busy the whole machine was (other users included).
type CPUUsage struct {
	BenchCores   float64 `json:"bench_process_cores"`
	EnvoyCores   float64 `json:"envoy_cores"`
	MachineBusy  float64 `json:"machine_busy_fraction"`
	MachineCores int     `json:"machine_cores"`
}

func cpuBetween(a, b cpuSample, cores int) CPUUsage {
	wall := b.at.Sub(a.at).Seconds()
	u := CPUUsage{MachineCores: cores}
	if wall <= 0 {
		return u
	}
	u.BenchCores = (b.self - a.self).Seconds() / wall
	u.EnvoyCores = (b.envoy - a.envoy).Seconds() / wall
	if a.machineErr == nil && b.machineErr == nil && b.machTotal > a.machTotal {
		u.MachineBusy = float64(b.machBusy-a.machBusy) / float64(b.machTotal-a.machTotal)
	}
	return u
}
