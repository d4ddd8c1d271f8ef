package loadtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/parquet-go/parquet-go"
)

// Dataset files: prompts (or whole chat conversations) read from a local file, one request
// per record, in the shapes datasets are usually published in.

// datasetItem is one usable record.
type datasetItem struct {
	msgs         []Message
	promptTokens int
	outputTokens int // 0: drawn from --output-tokens
}

// DatasetFormats are the formats --dataset reads.
var DatasetFormats = []string{"jsonl", "json", "parquet"}

// defaultPromptColumns are tried in order when no column is named.
var defaultPromptColumns = []string{"messages", "prompt", "text", "question", "input", "instruction"}

// Bounds, so that a malformed file fails with a clear error instead of exhausting memory.
const (
	maxDatasetRecords     = 1_000_000
	maxDatasetRecordBytes = 4 << 20
)

// DatasetConfig names the file and its columns.
type DatasetConfig struct {
	File   string `json:"file"`
	Format string `json:"format,omitempty"` // "" = by extension
	// PromptColumn holds a string prompt or a list of chat messages ({role, content});
	// "" tries messages, prompt, text, question, input, instruction.
	PromptColumn string `json:"prompt_column,omitempty"`
	// OutputColumn, when set, holds each record's output length (max_tokens).
	OutputColumn string `json:"output_column,omitempty"`
}

func loadDataset(c DatasetConfig) ([]datasetItem, error) {
	if c.File == "" {
		return nil, errors.New("workload dataset: no file given (--dataset FILE)")
	}
	format := c.Format
	if format == "" {
		format = strings.TrimPrefix(strings.ToLower(filepath.Ext(c.File)), ".")
	}
	f, err := os.Open(c.File)
	if err != nil {
		return nil, fmt.Errorf("workload dataset: %w", err)
	}
	defer f.Close()
	var items []datasetItem
	switch format {
	case "jsonl":
		items, err = readJSONLDataset(f, c)
	case "json":
		items, err = readJSONDataset(f, c)
	case "parquet":
		st, serr := f.Stat()
		if serr != nil {
			return nil, fmt.Errorf("workload dataset: %w", serr)
		}
		items, err = readParquetDataset(f, st.Size(), c)
	default:
		return nil, fmt.Errorf("workload dataset %s: format %q: want %s (--dataset-format)", c.File, format, strings.Join(DatasetFormats, ", "))
	}
	if err != nil {
		return nil, fmt.Errorf("workload dataset %s (%s): %w", c.File, format, err)
	}
	if len(items) == 0 {
		return nil, fmt.Errorf("workload dataset %s: no usable record (a non-empty prompt in column %s)", c.File, columnsDesc(c))
	}
	return items, nil
}

func columnsDesc(c DatasetConfig) string {
	if c.PromptColumn != "" {
		return c.PromptColumn
	}
	return "one of " + strings.Join(defaultPromptColumns, ", ")
}

// record turns one decoded record into an item; ok is false for a record without a usable
// prompt (skipped, like ShareGPT conversations without a usable turn).
func record(fields map[string]json.RawMessage, c DatasetConfig) (item datasetItem, ok bool, err error) {
	col := c.PromptColumn
	if col == "" {
		for _, name := range defaultPromptColumns {
			if _, present := fields[name]; present {
				col = name
				break
			}
		}
	}
	raw, present := fields[col]
	if !present || col == "" {
		return item, false, nil
	}
	item.msgs, err = promptValue(raw)
	if err != nil || item.msgs == nil {
		return item, false, err
	}
	for _, m := range item.msgs {
		item.promptTokens += wordCount(m.Content)
	}
	if c.OutputColumn != "" {
		if v, has := fields[c.OutputColumn]; has {
			var n int
			if err := json.Unmarshal(v, &n); err != nil || n < 0 || n > maxTraceTokens {
				return item, false, fmt.Errorf("column %s: %s: want an output length in [0, %d]", c.OutputColumn, truncate(string(v), 40), maxTraceTokens)
			}
			item.outputTokens = n
		}
	}
	return item, true, nil
}

// promptValue reads a string prompt or a list of chat messages. nil means no usable prompt.
func promptValue(raw json.RawMessage) ([]Message, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, err
		}
		if strings.TrimSpace(s) == "" {
			return nil, nil
		}
		return []Message{{Role: "user", Content: s}}, nil
	case '[':
		var msgs []Message
		if err := json.Unmarshal(raw, &msgs); err != nil {
			return nil, fmt.Errorf("messages: %w (want [{\"role\": …, \"content\": \"…\"}])", err)
		}
		out := msgs[:0]
		for _, m := range msgs {
			switch m.Role {
			case "system", "user", "assistant", "developer", "tool":
			default:
				return nil, fmt.Errorf("messages: role %q: want system, user, assistant, developer or tool", truncate(m.Role, 40))
			}
			if m.Content != "" {
				out = append(out, m)
			}
		}
		if len(out) == 0 {
			return nil, nil
		}
		return out, nil
	}
	return nil, fmt.Errorf("prompt %s: want a string or a list of chat messages", truncate(string(raw), 40))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func appendItem(items []datasetItem, it datasetItem) ([]datasetItem, error) {
	if len(items) >= maxDatasetRecords {
		return nil, fmt.Errorf("more than %d records: take a sample", maxDatasetRecords)
	}
	return append(items, it), nil
}

func readJSONLDataset(r io.Reader, c DatasetConfig) ([]datasetItem, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxDatasetRecordBytes)
	var items []datasetItem
	line := 0
	for sc.Scan() {
		line++
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(sc.Bytes(), &fields); err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		it, ok, err := record(fields, c)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		if ok {
			if items, err = appendItem(items, it); err != nil {
				return nil, err
			}
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("line %d: longer than %d bytes", line+1, maxDatasetRecordBytes)
		}
		return nil, err
	}
	return items, nil
}

// readJSONDataset reads a JSON array of records, one at a time (the file is not held twice).
func readJSONDataset(r io.Reader, c DatasetConfig) ([]datasetItem, error) {
	dec := json.NewDecoder(bufio.NewReader(r))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('[') {
		return nil, errors.New("want a JSON array of records")
	}
	var items []datasetItem
	for i := 0; dec.More(); i++ {
		var fields map[string]json.RawMessage
		if err := dec.Decode(&fields); err != nil {
			return nil, fmt.Errorf("record %d: %w", i, err)
		}
		it, ok, err := record(fields, c)
		if err != nil {
			return nil, fmt.Errorf("record %d: %w", i, err)
		}
		if ok {
			if items, err = appendItem(items, it); err != nil {
				return nil, err
			}
		}
	}
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("end of array: %w", err)
	}
	return items, nil
}

// readParquetDataset reads the prompt column (a string: a prompt, or chat messages as a
// JSON string) and the optional output column (an integer) of a Parquet file.
func readParquetDataset(r io.ReaderAt, size int64, c DatasetConfig) ([]datasetItem, error) {
	f, err := parquet.OpenFile(r, size)
	if err != nil {
		return nil, err
	}
	schema := f.Schema()
	promptCol := c.PromptColumn
	if promptCol == "" {
		for _, name := range defaultPromptColumns {
			if _, ok := schema.Lookup(name); ok {
				promptCol = name
				break
			}
		}
	}
	pc, ok := schema.Lookup(promptCol)
	if promptCol == "" || !ok {
		return nil, fmt.Errorf("no prompt column %s (a top-level string column)", columnsDesc(c))
	}
	oc := -1
	if c.OutputColumn != "" {
		leaf, ok := schema.Lookup(c.OutputColumn)
		if !ok {
			return nil, fmt.Errorf("no output column %q", c.OutputColumn)
		}
		oc = leaf.ColumnIndex
	}
	if f.NumRows() > maxDatasetRecords {
		return nil, fmt.Errorf("%d records: more than %d, take a sample", f.NumRows(), maxDatasetRecords)
	}
	var items []datasetItem
	buf := make([]parquet.Row, 256)
	for _, rg := range f.RowGroups() {
		rows := rg.Rows()
		for {
			n, err := rows.ReadRows(buf)
			for _, row := range buf[:n] {
				it, ok, rerr := parquetRecord(row, pc.ColumnIndex, oc, c)
				if rerr != nil {
					rows.Close()
					return nil, rerr
				}
				if ok {
					items = append(items, it)
				}
			}
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				rows.Close()
				return nil, err
			}
		}
		rows.Close()
	}
	return items, nil
}

func parquetRecord(row parquet.Row, promptIdx, outputIdx int, c DatasetConfig) (datasetItem, bool, error) {
	var it datasetItem
	var prompt []byte
	havePrompt := false
	for _, v := range row {
		switch v.Column() {
		case promptIdx:
			if v.IsNull() || v.Kind() != parquet.ByteArray {
				continue
			}
			if len(v.ByteArray()) > maxDatasetRecordBytes {
				return it, false, fmt.Errorf("a prompt longer than %d bytes", maxDatasetRecordBytes)
			}
			prompt, havePrompt = v.ByteArray(), true
		case outputIdx:
			if v.IsNull() {
				continue
			}
			switch v.Kind() {
			case parquet.Int32, parquet.Int64:
				n := v.Int64()
				if n < 0 || n > maxTraceTokens {
					return it, false, fmt.Errorf("column %s: %d: want an output length in [0, %d]", c.OutputColumn, n, maxTraceTokens)
				}
				it.outputTokens = int(n)
			default:
				return it, false, fmt.Errorf("column %s: want an integer column", c.OutputColumn)
			}
		}
	}
	if !havePrompt {
		return it, false, nil
	}
	// A string that holds a JSON list is taken as chat messages; any other string is a prompt.
	var err error
	if t := bytes.TrimSpace(prompt); len(t) > 0 && t[0] == '[' && json.Valid(t) {
		it.msgs, err = promptValue(t)
	} else {
		raw, _ := json.Marshal(string(prompt))
		it.msgs, err = promptValue(raw)
	}
	if err != nil || it.msgs == nil {
		return it, false, err
	}
	for _, m := range it.msgs {
		it.promptTokens += wordCount(m.Content)
	}
	return it, true, nil
}
