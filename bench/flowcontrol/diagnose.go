package main

// Where a tenant's time to first token goes at the gateway (issue 19's noisy-neighbour
// question): the picker's per-flow queue wait and pick time from its /metrics, and the CPU
// the cell used (the bench process — load tester, sims, picker — and Envoy) with the load
// average, so that a latency can be told apart from CPU contention on a shared machine.
// The CPU-hog control runs processes that only spin, to see what contention alone does to
// a tenant's TTFT.

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// hogChildFlag makes the binary spin forever: the CPU-hog control's child processes.
const hogChildFlag = "-cpu-hog-child"

// spin is the hog's body: one busy CPU until killed.
func spin() {
	x := uint64(1)
	for {
		x = x*6364136223846793005 + 1442695040888963407
		if x == 0 {
			fmt.Fprintln(os.Stderr, "unreachable", x) // keeps the loop from being optimised away
		}
	}
}

// startHogs starts n child processes that each keep one CPU busy, at the bench's own nice
// level, and returns the function that kills them (only them: by their process ids). They
// also die with the bench (Pdeathsig).
func startHogs(n int) (stop func(), err error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("cpu hog: %w", err)
	}
	var cmds []*exec.Cmd
	stop = func() {
		for _, c := range cmds {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
	}
	for i := 0; i < n; i++ {
		c := exec.Command(exe, hogChildFlag)
		c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := c.Start(); err != nil {
			stop()
			return nil, fmt.Errorf("cpu hog: start: %w", err)
		}
		cmds = append(cmds, c)
	}
	return stop, nil
}

// cpuUse is the CPU a cell's measured load used.
type cpuUse struct {
	// WallS is the load's wall time; SelfCores and EnvoyCores the CPU seconds per wall
	// second of the bench process (load tester, sims, picker) and of Envoy.
	WallS      float64 `json:"wall_s"`
	SelfCores  float64 `json:"bench_process_cores"`
	EnvoyCores float64 `json:"envoy_cores"`
	// LoadavgEnd is /proc/loadavg's 1, 5 and 15 minute averages at the end of the load.
	LoadavgEnd string `json:"loadavg_end"`
	// Hogs is the number of spinning processes the cell ran beside (the control).
	Hogs int `json:"cpu_hogs,omitempty"`
}

// cpuMeter takes CPU readings of the bench process and Envoy.
type cpuMeter struct {
	envoyPid int
	t0       time.Time
	self0    time.Duration
	envoy0   time.Duration
}

func startCPUMeter(envoyPid int) *cpuMeter {
	return &cpuMeter{envoyPid: envoyPid, t0: time.Now(), self0: selfCPU(), envoy0: procCPU(envoyPid)}
}

func (m *cpuMeter) stop() cpuUse {
	wall := time.Since(m.t0)
	u := cpuUse{WallS: wall.Seconds(), LoadavgEnd: readLoadavg()}
	if wall > 0 {
		u.SelfCores = (selfCPU() - m.self0).Seconds() / wall.Seconds()
		u.EnvoyCores = (procCPU(m.envoyPid) - m.envoy0).Seconds() / wall.Seconds()
	}
	return u
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// userHZ is the unit of /proc/<pid>/stat's CPU times (USER_HZ, 100 on Linux's mainstream
// architectures; Go has no sysconf to ask).
const userHZ = 100

// procCPU is a process's user + system CPU time from /proc (0 when unreadable).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command name (field 2) is in parentheses and may hold spaces: count fields after
	// the last ')'. utime and stime are fields 14 and 15 of the line.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return time.Duration(ut+st) * time.Second / userHZ
}

// scrapePicker reads and parses the picker's /metrics.
func (b *bench) scrapePicker(ctx context.Context) (map[string]*dto.MetricFamily, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+b.metricsAddr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape picker metrics: %w", err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return nil, fmt.Errorf("parse picker metrics: %w", err)
	}
	return mfs, nil
}

// waitStats summarises one histogram series of queue waits.
type waitStats struct {
	N      uint64  `json:"n"`
	MeanMs float64 `json:"mean_ms"`
	// P90LeMs is the upper bound of the bucket the 90th percentile falls in (a histogram
	// knows no more); +Inf past the last bucket.
	P90LeMs float64 `json:"p90_le_ms"`
}

func (w *waitStats) String() string {
	if w == nil || w.N == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f / ≤ %s", w.MeanMs, fmtMs(w.P90LeMs))
}

func fmtMs(v float64) string {
	if math.IsInf(v, 1) {
		return "∞"
	}
	return strconv.FormatFloat(v, 'g', -1, 64) // bucket bounds: 0.1, 2.5, 250, 60000
}

func statsOf(h *dto.Histogram) *waitStats {
	n := h.GetSampleCount()
	if n == 0 {
		return &waitStats{}
	}
	w := &waitStats{N: n, MeanMs: 1000 * h.GetSampleSum() / float64(n), P90LeMs: math.Inf(1)}
	target := uint64(math.Ceil(0.9 * float64(n)))
	for _, bk := range h.GetBucket() { // cumulative counts
		if bk.GetCumulativeCount() >= target {
			w.P90LeMs = 1000 * bk.GetUpperBound()
			break
		}
	}
	return w
}

func labelOf(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// flowWait is the dispatch wait of one flow (priority band and fairness ID) from the
// picker's infergw_flow_control_flow_dispatch_wait_seconds; nil when it has none.
func flowWait(mfs map[string]*dto.MetricFamily, priority int, fairnessID string) *waitStats {
	mf := mfs["infergw_flow_control_flow_dispatch_wait_seconds"]
	if mf == nil {
		return nil
	}
	for _, m := range mf.GetMetric() {
		if labelOf(m, "priority") == strconv.Itoa(priority) && labelOf(m, "fairness_id") == fairnessID {
			return statsOf(m.GetHistogram())
		}
	}
	return nil
}

// meanPickUs is the mean time of the router's Pick per request (all tenants), µs.
func meanPickUs(mfs map[string]*dto.MetricFamily) float64 {
	mf := mfs["inference_extension_scheduler_e2e_duration_seconds"]
	var sum float64
	var n uint64
	for _, m := range mf.GetMetric() {
		sum += m.GetHistogram().GetSampleSum()
		n += m.GetHistogram().GetSampleCount()
	}
	if n == 0 {
		return 0
	}
	return 1e6 * sum / float64(n)
}

// queueWaitsByPriority is the mean queue time of dispatched requests per band, ms (from
// inference_extension_flow_control_request_queue_duration_seconds).
func queueWaitsByPriority(mfs map[string]*dto.MetricFamily) map[string]float64 {
	mf := mfs["inference_extension_flow_control_request_queue_duration_seconds"]
	out := map[string]float64{}
	for _, m := range mf.GetMetric() {
		if labelOf(m, "outcome") != "Dispatched" {
			continue
		}
		if h := m.GetHistogram(); h.GetSampleCount() > 0 {
			out[labelOf(m, "priority")] = 1000 * h.GetSampleSum() / float64(h.GetSampleCount())
		}
	}
	return out
}

// objectivePriority is the priority of the benchmark's InferenceObjectives (layout.go); a
// tenant without one is in band 0.
func objectivePriority(objective string) int {
	switch objective {
	case "critical":
		return 10
	case "batch":
		return -1
	}
	return 0
}
