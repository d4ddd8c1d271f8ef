// Command scrapecost measures what the router's /metrics scrapes cost a model server: the
// CPU time of the server process (from /proc/PID/stat) while nothing scrapes it, while
// the router scrapes it every 50 ms (the idle adaptation off: what the router did before
// it had one), and while the router runs with its defaults (an idle server scraped every
// 500 ms). It also counts the scrapes each phase made. Run it against an idle server, e.g.
// a vLLM started as test/vllm does:
//
//	go run ./test/vllm/scrapecost --addr 127.0.0.77:18777 --pid <API server pid> --seconds 20
package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/infergw/infergw/router"
)

func main() {
	addr := flag.String("addr", "", "model server ip:port")
	pid := flag.Int("pid", 0, "model server process id (the one serving /metrics)")
	seconds := flag.Int("seconds", 20, "length of each phase")
	flag.Parse()
	if *addr == "" || *pid == 0 {
		fmt.Fprintln(os.Stderr, "scrapecost: --addr and --pid are required")
		os.Exit(2)
	}
	phase := time.Duration(*seconds) * time.Second
	fmt.Printf("server %s pid %d, %v per phase\n", *addr, *pid, phase)
	fmt.Printf("%-44s %12s %10s\n", "phase", "CPU ms/s", "scrapes/s")
	measure("not scraped", *pid, phase, nil, *addr)
	before := router.DefaultConfig()
	before.IdleScrapeInterval = before.ScrapeInterval // adaptation off: every 50 ms
	measure("router, every 50 ms (before)", *pid, phase, &before, *addr)
	after := router.DefaultConfig()
	measure(fmt.Sprintf("router defaults, idle (after: %v)", after.StalenessThreshold/4), *pid, phase, &after, *addr)
}

// measure runs one phase: a router with cfg scraping addr (none when cfg is nil) and the
// server's CPU time over the phase.
func measure(name string, pid int, d time.Duration, cfg *router.Config, addr string) {
	reg := prometheus.NewRegistry()
	var r *router.Router
	if cfg != nil {
		var err error
		if r, err = router.New(*cfg, slog.New(slog.DiscardHandler), reg); err != nil {
			fail(err)
		}
		r.SetPool("ns/p", []router.EndpointSpec{{Name: "server", Address: addr}})
		time.Sleep(time.Second) // first scrapes and the model list, outside the window
	}
	n0, c0 := scrapes(reg), cpuTime(pid)
	start := time.Now()
	time.Sleep(d)
	n1, c1, took := scrapes(reg), cpuTime(pid), time.Since(start)
	if r != nil {
		r.Close()
	}
	fmt.Printf("%-44s %12.1f %10.1f\n", name, float64((c1-c0).Milliseconds())/took.Seconds(), float64(n1-n0)/took.Seconds())
}

// scrapes is the router's scrape count (its scrape duration histogram's sample count).
func scrapes(reg *prometheus.Registry) uint64 {
	fams, err := reg.Gather()
	if err != nil {
		fail(err)
	}
	for _, f := range fams {
		if f.GetName() == "infergw_router_scrape_duration_seconds" {
			return histCount(f.GetMetric())
		}
	}
	return 0
}

func histCount(ms []*dto.Metric) uint64 {
	var n uint64
	for _, m := range ms {
		n += m.GetHistogram().GetSampleCount()
	}
	return n
}

// cpuTime is the process's user+system time from /proc/PID/stat (fields 14 and 15, in
// clock ticks of 1/100 s on Linux).
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		fail(err)
	}
	// The command name (field 2) may hold spaces; fields after its ')' are fixed.
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "scrapecost:", err)
	os.Exit(1)
}
