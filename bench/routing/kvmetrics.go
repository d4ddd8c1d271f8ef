package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// kvMetricPrefixes are the precise-prefix metrics a cell records from every picker: how
// often the index was reset (sequence gaps, restarts), what it dropped, how the scorer's
// tokenizing went, and the pods' states at the end.
var kvMetricPrefixes = []string{
	"infergw_kv_index_resets_total", "infergw_kv_index_dropped_total", "infergw_kv_index_pods",
	"infergw_precise_prefix_requests_total", "infergw_kv_events_messages_total",
	"infergw_precise_prefix_shadow_hosts_total", "infergw_precise_prefix_shadow_picks_total",
	"infergw_kv_index_speculation_ends_total", "infergw_kv_index_speculation_expired_total",
}

// scrapeKVMetrics sums, over the pickers' /metrics (host:port each), every series of
// kvMetricPrefixes, keyed by the series as written ("name{labels}"). Unreachable pickers
// are skipped: the figures are a diagnosis, not a result.
func scrapeKVMetrics(ctx context.Context, addrs []string) map[string]float64 {
	out := map[string]float64{}
	client := &http.Client{Timeout: 2 * time.Second}
	for _, a := range addrs {
		if a == "" {
			continue
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+a+"/metrics", nil)
		if err != nil {
			continue
		}
		resp, err := client.Do(req)
		if err != nil {
			continue
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
		resp.Body.Close()
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(body), "\n") {
			if strings.HasPrefix(line, "#") {
				continue
			}
			for _, p := range kvMetricPrefixes {
				if !strings.HasPrefix(line, p) {
					continue
				}
				i := strings.LastIndexByte(line, ' ')
				if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil && i > 0 {
					out[line[:i]] += v
				}
			}
		}
	}
	return out
}

// kvMetricsText is the non-zero series, sorted, for the progress line.
func kvMetricsText(m map[string]float64) string {
	var parts []string
	for k, v := range m {
		if v != 0 {
			parts = append(parts, fmt.Sprintf("%s %g", k, v))
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}
