package loadtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// Headers a gateway in front of the fleet reads to tell tenants and priorities apart (the
// Gateway API Inference Extension's names; plain strings, the load tester imports nothing
// of the gateway).
const (
	HeaderFairnessID = "x-gateway-inference-fairness-id"
	HeaderObjective  = "x-gateway-inference-objective"
)

// Tenant is one flow of a multi-tenant run: its own open-loop rate, identity headers and
// prompt/output lengths, run alongside the others against the same URL.
type Tenant struct {
	// Name labels the tenant in reports (unique, required).
	Name string `json:"name"`
	// Rate is the tenant's open-loop request rate per second (required).
	Rate float64 `json:"rate"`
	// FairnessID and Objective, when set, are sent as x-gateway-inference-fairness-id and
	// x-gateway-inference-objective.
	FairnessID string `json:"fairness_id,omitempty"`
	Objective  string `json:"objective,omitempty"`
	// Headers are sent too (after the base config's).
	Headers []Header `json:"headers,omitempty"`
	// Input and Output override the base workload's prompt and output lengths when set.
	Input  *LengthDist `json:"input,omitempty"`
	Output *LengthDist `json:"output,omitempty"`
}

// TenantSummary is one tenant's share of a multi-tenant run.
type TenantSummary struct {
	Tenant Tenant `json:"tenant"`
	// Offered is the number of requests the tenant's schedule called for (measured period);
	// Served succeeded; Rejected got 429 or 503 (the gateway turned them away); OtherFailed
	// failed otherwise; Interrupted were cut by cancellation; Dropped could not start (the
	// in-flight bound). Offered = Served + Rejected + OtherFailed + Interrupted + Dropped.
	Offered     int64    `json:"offered"`
	Served      int64    `json:"served"`
	Rejected    int64    `json:"rejected"`
	OtherFailed int64    `json:"other_failed"`
	Interrupted int64    `json:"interrupted"`
	Dropped     int64    `json:"dropped"`
	Summary     *Summary `json:"summary"`
}

// TenantsSummary is the report of RunTenants.
type TenantsSummary struct {
	URL     string          `json:"url"`
	Seed    uint64          `json:"seed"`
	Tenants []TenantSummary `json:"tenants"`
}

// ParseTenant reads "name=A,rate=2[,fairness=ID][,objective=NAME][,input=DIST][,output=DIST]
// [,header=K:V]..." (DIST as ParseLengthDist; header may repeat).
func ParseTenant(s string) (Tenant, error) {
	var t Tenant
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return Tenant{}, fmt.Errorf("tenant %q: %q is not key=value", s, part)
		}
		switch k {
		case "name":
			t.Name = v
		case "rate":
			r, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return Tenant{}, fmt.Errorf("tenant %q: rate: %w", s, err)
			}
			t.Rate = r
		case "fairness":
			t.FairnessID = v
		case "objective":
			t.Objective = v
		case "input", "output":
			d, err := ParseLengthDist(v)
			if err != nil {
				return Tenant{}, fmt.Errorf("tenant %q: %s: %w", s, k, err)
			}
			if k == "input" {
				t.Input = &d
			} else {
				t.Output = &d
			}
		case "header":
			hk, hv, ok := strings.Cut(v, ":")
			if !ok || hk == "" {
				return Tenant{}, fmt.Errorf("tenant %q: header %q: want NAME:VALUE", s, v)
			}
			t.Headers = append(t.Headers, Header{Name: hk, Value: hv})
		default:
			return Tenant{}, fmt.Errorf("tenant %q: unknown key %q (name, rate, fairness, objective, input, output, header)", s, k)
		}
	}
	return t, validateTenant(t)
}

func validateTenant(t Tenant) error {
	switch {
	case t.Name == "":
		return errors.New("tenant: no name")
	case !(t.Rate > 0) || t.Rate > 1e6:
		return fmt.Errorf("tenant %s: rate %v: want a number in (0, 1e6]", t.Name, t.Rate)
	case strings.ContainsAny(t.FairnessID+t.Objective, "\r\n"):
		return fmt.Errorf("tenant %s: line break in a header value", t.Name)
	}
	return nil
}

// maxTenants bounds a run (each tenant has its own scheduler and connections).
const maxTenants = 64

// RunTenants runs every tenant's open loop at once against base.URL, each with base's
// settings (duration, warm-up, workload, SLO, ...) and its own rate, headers and lengths,
// and reports each one. Tenant i draws its requests from seed base.Seed+i, so a rerun with
// the same seed offers the same requests. Only the first tenant scrapes base.Scrape.
func RunTenants(ctx context.Context, base Config, tenants []Tenant, log *slog.Logger) (*TenantsSummary, error) {
	if len(tenants) == 0 || len(tenants) > maxTenants {
		return nil, fmt.Errorf("tenants: %d tenants, want 1 to %d", len(tenants), maxTenants)
	}
	if base.VUs > 0 || len(base.Stages) > 0 || base.Workload.Kind == "trace" {
		return nil, errors.New("tenants: each tenant is an open loop at its own rate; --vus, --stage and --trace do not apply")
	}
	if base.RequestLog != nil || base.RequestCSV != nil || base.Progress != nil {
		return nil, errors.New("tenants: per-request logs and progress are per run; not supported with tenants")
	}
	seen := map[string]bool{}
	for _, t := range tenants {
		if err := validateTenant(t); err != nil {
			return nil, err
		}
		if seen[t.Name] {
			return nil, fmt.Errorf("tenants: name %q used twice", t.Name)
		}
		seen[t.Name] = true
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if base.Seed == 0 {
		base.Seed = 1
	}
	out := &TenantsSummary{URL: base.URL, Seed: base.Seed, Tenants: make([]TenantSummary, len(tenants))}
	errs := make([]error, len(tenants))
	var wg sync.WaitGroup
	for i, t := range tenants {
		cfg := base
		cfg.Rate = t.Rate
		cfg.Seed = base.Seed + uint64(i)
		cfg.Headers = append(append([]Header(nil), base.Headers...), t.Headers...)
		if t.FairnessID != "" {
			cfg.Headers = append(cfg.Headers, Header{Name: HeaderFairnessID, Value: t.FairnessID})
		}
		if t.Objective != "" {
			cfg.Headers = append(cfg.Headers, Header{Name: HeaderObjective, Value: t.Objective})
		}
		if t.Input != nil {
			cfg.Workload.Input = *t.Input
		}
		if t.Output != nil {
			cfg.Workload.Output = *t.Output
		}
		if i > 0 {
			cfg.Scrape = nil
		}
		wg.Add(1)
		go func(i int, t Tenant, cfg Config) {
			defer wg.Done()
			s, err := Run(ctx, cfg, log.With("tenant", t.Name))
			if err != nil {
				errs[i] = fmt.Errorf("tenant %s: %w", t.Name, err)
				return
			}
			out.Tenants[i] = tenantSummary(t, s)
		}(i, t, cfg)
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

func tenantSummary(t Tenant, s *Summary) TenantSummary {
	ts := TenantSummary{Tenant: t, Summary: s, Served: s.Succeeded, Interrupted: s.Interrupted, Dropped: s.Schedule.Dropped}
	ts.Offered = s.Requests + s.Interrupted + s.Schedule.Dropped
	for class, n := range s.ErrorsByStatus {
		if class == "http_429" || class == "http_503" {
			ts.Rejected += n
		} else {
			ts.OtherFailed += n
		}
	}
	return ts
}

// WriteTenantsText writes one line per tenant (offered, served, rejected, TTFT
// percentiles, goodput), then each tenant's full summary.
func WriteTenantsText(w io.Writer, ts *TenantsSummary) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Tenants against %s (seed %d)\n\n", ts.URL, ts.Seed)
	writeTenantTable(&b, ts, false)
	for _, t := range ts.Tenants {
		fmt.Fprintf(&b, "\n=== tenant %s ===\n", t.Tenant.Name)
		if err := WriteText(&b, t.Summary); err != nil {
			return err
		}
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("write tenants report: %w", err)
	}
	return nil
}

// WriteTenantsMarkdown writes the per-tenant table in Markdown.
func WriteTenantsMarkdown(w io.Writer, ts *TenantsSummary) error {
	var b strings.Builder
	writeTenantTable(&b, ts, true)
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("write tenants markdown: %w", err)
	}
	return nil
}

func writeTenantTable(b *strings.Builder, ts *TenantsSummary, md bool) {
	cols := []string{"tenant", "rate/s", "fairness id", "objective", "offered", "served", "rejected", "other failed",
		"TTFT p50 ms", "TTFT p90 ms", "TTFT p99 ms", "goodput/s", "output tok/s"}
	row := func(cells []string) {
		if md {
			fmt.Fprintf(b, "| %s |\n", strings.Join(cells, " | "))
			return
		}
		fmt.Fprintf(b, "%-12s %7s %-12s %-10s %8s %8s %8s %8s %11s %11s %11s %9s %12s\n", toAny(cells)...)
	}
	row(cols)
	if md {
		fmt.Fprintf(b, "|%s\n", strings.Repeat("---|", len(cols)))
	}
	for _, t := range ts.Tenants {
		s := t.Summary
		good := "-"
		if s.Goodput != nil {
			good = fmt.Sprintf("%.2f", s.Goodput.Rate)
		}
		row([]string{t.Tenant.Name, fmt.Sprintf("%.2f", t.Tenant.Rate), orDash(t.Tenant.FairnessID), orDash(t.Tenant.Objective),
			strconv.FormatInt(t.Offered, 10), strconv.FormatInt(t.Served, 10), strconv.FormatInt(t.Rejected, 10),
			strconv.FormatInt(t.OtherFailed, 10), fmt.Sprintf("%.1f", s.TTFT.P50), fmt.Sprintf("%.1f", s.TTFT.P90),
			fmt.Sprintf("%.1f", s.TTFT.P99), good, fmt.Sprintf("%.1f", s.OutputTokensPerS)})
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func toAny(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

// WriteTenantsJSON writes the report as JSON.
func WriteTenantsJSON(w io.Writer, ts *TenantsSummary) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(ts); err != nil {
		return fmt.Errorf("write tenants json: %w", err)
	}
	return nil
}

// WriteTenantsHTML writes one self-contained page: the per-tenant table, the tenants'
// TTFT and end-to-end CDFs overlaid, and each tenant's text summary.
func WriteTenantsHTML(w io.Writer, ts *TenantsSummary) error {
	var table, text strings.Builder
	writeTenantTable(&table, ts, false)
	if err := WriteTenantsText(&text, ts); err != nil {
		return err
	}
	var ttft, e2e []cdfSeries
	names := make([]string, 0, len(ts.Tenants))
	for i, t := range ts.Tenants {
		color := runColors[i%len(runColors)]
		ttft = append(ttft, cdfSeries{name: t.Tenant.Name, color: color, pts: t.Summary.CDFs["ttft"]})
		e2e = append(e2e, cdfSeries{name: t.Tenant.Name, color: color, pts: t.Summary.CDFs["e2e"]})
		names = append(names, t.Tenant.Name)
	}
	sort.Strings(names)
	data := struct {
		TS          *TenantsSummary
		Names       string
		Table, Text string
		TTFT, E2E   template.HTML
	}{ts, strings.Join(names, ", "), table.String(), text.String(), cdfSVG(ttft), cdfSVG(e2e)}
	if err := tenantsTmpl.Execute(w, data); err != nil {
		return fmt.Errorf("write tenants html: %w", err)
	}
	return nil
}

var tenantsTmpl = template.Must(template.New("tenants").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>infergw loadtest tenants {{.TS.URL}}</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
h1{font-size:1.4em} h2{font-size:1.1em;margin-top:2em}
pre{background:#f6f6f6;padding:1em;overflow-x:auto;font-size:12px}
svg{background:#fff;border:1px solid #ddd} .ax{stroke:#999;stroke-width:1} .lbl{font-size:11px;fill:#555}
</style></head><body>
<h1>infergw loadtest — tenants {{.Names}} against {{.TS.URL}}</h1>
<h2>Per tenant</h2><pre>{{.Table}}</pre>
<h2>TTFT CDF per tenant</h2>{{.TTFT}}
<h2>End-to-end latency CDF per tenant</h2>{{.E2E}}
<h2>Summaries</h2><pre>{{.Text}}</pre>
</body></html>
`))
