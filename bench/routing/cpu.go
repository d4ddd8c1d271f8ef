package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, 100 on every Linux the benchmark targets (sysconf(_SC_CLK_TCK)).
const clockTicks = 100

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

// CPUUsage is what the routing layer's process tree cost during the measured period: CPU
// seconds in total and per command name (envoy, infergw, sglang-router, …), and how busy
// the whole machine was (sims, load tester and other users included).
type CPUUsage struct {
	LayerSeconds float64            `json:"layer_cpu_seconds"`
	ByProcess    map[string]float64 `json:"layer_cpu_seconds_by_process"`
	WallSeconds  float64            `json:"wall_seconds"`
	MachineBusy  float64            `json:"machine_busy_fraction"`
	MachineCores int                `json:"machine_cores"`
	Err          string             `json:"error,omitempty"`
}

// PerKRequests is the layer's CPU seconds per 1,000 requests completed in the measured
// period (0 when none completed).
func (u CPUUsage) PerKRequests(completed int64) float64 {
	if completed <= 0 {
		return 0
	}
	return 1000 * u.LayerSeconds / float64(completed)
}

// cpuMeter samples a process tree and the machine after a delay (the warm-up) and again
// at finish.
type cpuMeter struct {
	root  int
	done  chan struct{}
	start struct {
		at        time.Time
		tree      treeCPU
		err       error
		busy, tot uint64
		merr      error
	}
}

func startCPUMeter(root int, delay time.Duration) *cpuMeter {
	m := &cpuMeter{root: root, done: make(chan struct{})}
	go func() {
		defer close(m.done)
		time.Sleep(delay)
		m.start.at = time.Now()
		m.start.tree, m.start.err = sampleTree(root)
		m.start.busy, m.start.tot, m.start.merr = machineCPU()
	}()
	return m
}

func (m *cpuMeter) finish() (CPUUsage, error) {
	<-m.done
	u := CPUUsage{MachineCores: runtime.NumCPU()}
	if m.start.err != nil {
		return u, m.start.err
	}
	tree, err := sampleTree(m.root)
	if err != nil {
		return u, err
	}
	u.WallSeconds = time.Since(m.start.at).Seconds()
	d := tree.minus(m.start.tree)
	u.LayerSeconds = d.total().Seconds()
	u.ByProcess = map[string]float64{}
	for k, v := range d {
		u.ByProcess[k] = v.Seconds()
	}
	if busy, tot, err := machineCPU(); err == nil && m.start.merr == nil && tot > m.start.tot {
		u.MachineBusy = float64(busy-m.start.busy) / float64(tot-m.start.tot)
	}
	return u, nil
}
