package loadtest

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Trace replay: a recorded production trace drives both the schedule (each request starts
// at its own timestamp, divided by the time scale) and the request shapes (input and output
// lengths, and, for Mooncake traces, which prompt prefixes requests share).

// traceEntry is one request of a trace.
type traceEntry struct {
	at     time.Duration // since the trace's first request
	input  int           // prompt tokens
	output int           // output tokens (max_tokens)
	// hashIDs are Mooncake's prefix blocks: block i stands for prompt tokens
	// [i·512, (i+1)·512), and two requests with the same id there share those tokens.
	hashIDs []uint64
}

// mooncakeBlockTokens is the span of one Mooncake hash_id, as its trace documents it.
const mooncakeBlockTokens = 512

// Bounds on what a trace file may hold, so a malformed or hostile file fails with a clear
// error instead of exhausting memory.
const (
	maxTraceEntries   = 2_000_000
	maxTraceLineBytes = 1 << 20
	maxTraceTokens    = 1_000_000 // per request, input or output
)

// TraceFormats are the trace formats --trace reads.
var TraceFormats = []string{"mooncake", "azure"}

// loadTrace reads a trace file; format "" picks by extension (.jsonl: mooncake, .csv: azure).
func loadTrace(path, format string) ([]traceEntry, error) {
	if path == "" {
		return nil, errors.New("workload trace: no file given (--trace FILE)")
	}
	if format == "" {
		switch strings.ToLower(filepath.Ext(path)) {
		case ".jsonl", ".json":
			format = "mooncake"
		case ".csv":
			format = "azure"
		default:
			return nil, fmt.Errorf("workload trace %s: cannot tell the format from the extension; give --trace-format (%s)",
				path, strings.Join(TraceFormats, ", "))
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("workload trace: %w", err)
	}
	defer f.Close()
	var entries []traceEntry
	switch format {
	case "mooncake":
		entries, err = parseMooncake(f)
	case "azure":
		entries, err = parseAzureTrace(f)
	default:
		return nil, fmt.Errorf("workload trace: format %q: want %s", format, strings.Join(TraceFormats, " or "))
	}
	if err != nil {
		return nil, fmt.Errorf("workload trace %s (%s): %w", path, format, err)
	}
	return entries, nil
}

type mooncakeRecord struct {
	Timestamp    *float64 `json:"timestamp"` // milliseconds
	InputLength  *int     `json:"input_length"`
	OutputLength *int     `json:"output_length"`
	HashIDs      []uint64 `json:"hash_ids"`
}

// parseMooncake reads the Mooncake trace format: one JSON object per line with timestamp
// (ms), input_length, output_length and hash_ids.
func parseMooncake(r io.Reader) ([]traceEntry, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxTraceLineBytes)
	var out []traceEntry
	line := 0
	for sc.Scan() {
		line++
		b := sc.Bytes()
		if len(strings.TrimSpace(string(b))) == 0 {
			continue
		}
		var rec mooncakeRecord
		if err := json.Unmarshal(b, &rec); err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		if rec.Timestamp == nil || rec.InputLength == nil || rec.OutputLength == nil {
			return nil, fmt.Errorf("line %d: want timestamp, input_length and output_length", line)
		}
		e, err := newTraceEntry(*rec.Timestamp, *rec.InputLength, *rec.OutputLength)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		if len(rec.HashIDs) > (e.input+mooncakeBlockTokens-1)/mooncakeBlockTokens {
			return nil, fmt.Errorf("line %d: %d hash_ids for %d input tokens (one id per %d tokens)",
				line, len(rec.HashIDs), e.input, mooncakeBlockTokens)
		}
		e.hashIDs = rec.HashIDs
		if out, err = appendEntry(out, e); err != nil {
			return nil, err
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("line %d: longer than %d bytes", line+1, maxTraceLineBytes)
		}
		return nil, err
	}
	return finishTrace(out)
}

// parseAzureTrace reads the Azure LLM inference trace format: CSV with a header naming
// TIMESTAMP (a date and time, e.g. "2023-11-16 18:15:46.6805900"), ContextTokens and
// GeneratedTokens.
func parseAzureTrace(r io.Reader) ([]traceEntry, error) {
	cr := csv.NewReader(bufio.NewReader(r))
	cr.ReuseRecord = true
	header, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	col := map[string]int{}
	for i, h := range header {
		col[strings.ToLower(strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")))] = i
	}
	ti, ok1 := col["timestamp"]
	ci, ok2 := col["contexttokens"]
	gi, ok3 := col["generatedtokens"]
	if !ok1 || !ok2 || !ok3 {
		return nil, fmt.Errorf("header %q: want TIMESTAMP, ContextTokens and GeneratedTokens columns", strings.Join(header, ","))
	}
	var out []traceEntry
	var first time.Time
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		row, _ := cr.FieldPos(0)
		if len(rec) <= max(ti, ci, gi) {
			return nil, fmt.Errorf("row %d: %d fields", row, len(rec))
		}
		ts, err := parseAzureTime(rec[ti])
		if err != nil {
			return nil, fmt.Errorf("row %d: %w", row, err)
		}
		if first.IsZero() {
			first = ts
		}
		in, err1 := strconv.Atoi(strings.TrimSpace(rec[ci]))
		gen, err2 := strconv.Atoi(strings.TrimSpace(rec[gi]))
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("row %d: ContextTokens %q, GeneratedTokens %q: want integers", row, rec[ci], rec[gi])
		}
		e, err := newTraceEntry(float64(ts.Sub(first))/float64(time.Millisecond), in, gen)
		if err != nil {
			return nil, fmt.Errorf("row %d: %w", row, err)
		}
		if out, err = appendEntry(out, e); err != nil {
			return nil, err
		}
	}
	return finishTrace(out)
}

func parseAzureTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	for _, layout := range []string{"2006-01-02 15:04:05.999999999", "2006-01-02T15:04:05.999999999Z07:00", "2006-01-02 15:04:05.999999999Z07:00"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("TIMESTAMP %q: want e.g. 2023-11-16 18:15:46.6805900", s)
}

func newTraceEntry(ms float64, input, output int) (traceEntry, error) {
	if math.IsNaN(ms) || math.IsInf(ms, 0) || ms < 0 || ms > float64(365*24*time.Hour/time.Millisecond) {
		return traceEntry{}, fmt.Errorf("timestamp %v: want milliseconds in [0, one year]", ms)
	}
	if input < 1 || input > maxTraceTokens || output < 0 || output > maxTraceTokens {
		return traceEntry{}, fmt.Errorf("lengths %d in, %d out: want input in [1, %d] and output in [0, %d]",
			input, output, maxTraceTokens, maxTraceTokens)
	}
	return traceEntry{at: time.Duration(ms * float64(time.Millisecond)), input: input, output: output}, nil
}

func appendEntry(out []traceEntry, e traceEntry) ([]traceEntry, error) {
	if len(out) >= maxTraceEntries {
		return nil, fmt.Errorf("more than %d requests: split the trace", maxTraceEntries)
	}
	return append(out, e), nil
}

// finishTrace orders the entries by time (stable, so equal timestamps keep file order) and
// makes times relative to the first request.
func finishTrace(out []traceEntry) ([]traceEntry, error) {
	if len(out) == 0 {
		return nil, errors.New("no request in the trace")
	}
	slices.SortStableFunc(out, func(a, b traceEntry) int { return int(a.at - b.at) })
	t0 := out[0].at
	for i := range out {
		out[i].at -= t0
	}
	return out, nil
}

// traceArrivals is the open-loop schedule of a trace: request i is due at its timestamp
// divided by the time scale, after the warm-up offset 0.
type traceArrivals struct {
	entries []traceEntry
	scale   float64
	i       int
}

func (a *traceArrivals) next() (time.Duration, bool) {
	if a.i >= len(a.entries) {
		return 0, false
	}
	at := time.Duration(float64(a.entries[a.i].at) / a.scale)
	a.i++
	return at, true
}

// tracePrompt builds the prompt of a trace entry: for each hash id a block of
// mooncakeBlockTokens tokens drawn from a generator seeded by the id (and the seed) alone,
// so requests sharing ids share those leading blocks' text; then tokens unique to the
// request up to the input length.
func (g *generator) tracePrompt(e traceEntry) string {
	var parts []string
	n := 0
	for _, id := range e.hashIDs {
		if n >= e.input {
			break
		}
		k := min(mooncakeBlockTokens, e.input-n)
		rng := rand.New(rand.NewPCG(g.seed, id))
		if n == 0 {
			parts = append(parts, g.blockText(rng, k, false))
		} else {
			parts = append(parts, g.blockText(rng, k, true))
		}
		n += k
	}
	if n < e.input {
		parts = append(parts, g.blockText(g.rng, e.input-n, n > 0))
	}
	return strings.Join(parts, " ")
}

// blockText is k tokens from rng; cont when it follows a space.
func (g *generator) blockText(rng *rand.Rand, k int, cont bool) string {
	if g.tok != nil {
		text, _ := g.tok.words(rng, k, cont)
		return text
	}
	return g.wordsAfter(rng, k)
}
