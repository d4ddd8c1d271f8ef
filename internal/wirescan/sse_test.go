package wirescan

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func readAllEvents(t testing.TB, r io.Reader, maxLine int) ([]string, error) {
	t.Helper()
	s := NewSSEReader(r, maxLine)
	var out []string
	for {
		ev, err := s.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, string(ev.Event)+"|"+string(ev.Data))
	}
}

func TestSSEReader(t *testing.T) {
	in := ": keep-alive\n\n" +
		"data: {\"a\":1}\n\n" +
		"data:no-space\r\n\r\n" +
		"event: ping\ndata: x\n\n" +
		"data: line1\ndata: line2\n\n" +
		"id: 7\nretry: 100\n\n" + // no data: no event
		"data: [DONE]" // no trailing blank line
	want := []string{`|{"a":1}`, "|no-space", "ping|x", "|line1\nline2", "|[DONE]"}
	for name, r := range map[string]io.Reader{
		"whole":    strings.NewReader(in),
		"one byte": iotest.OneByteReader(strings.NewReader(in)),
	} {
		got, err := readAllEvents(t, r, 0)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if strings.Join(got, "\n#\n") != strings.Join(want, "\n#\n") {
			t.Errorf("%s: got %q, want %q", name, got, want)
		}
	}
}

func TestSSEReaderLongLines(t *testing.T) {
	long := strings.Repeat("x", 10000) // longer than the 4 KiB buffer
	got, err := readAllEvents(t, strings.NewReader("data: "+long+"\n\n"), 0)
	if err != nil || len(got) != 1 || got[0] != "|"+long {
		t.Fatalf("long line: %v, %d events", err, len(got))
	}
	_, err = readAllEvents(t, strings.NewReader("data: "+long+"\n\n"), 5000)
	if !errors.Is(err, ErrSSELineTooLong) {
		t.Fatalf("over-long line: err %v, want ErrSSELineTooLong", err)
	}
}

func TestSSEReaderReadError(t *testing.T) {
	r := io.MultiReader(strings.NewReader("data: a\n\n"), iotest.ErrReader(errors.New("boom")))
	got, err := readAllEvents(t, r, 0)
	if len(got) != 1 || err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("events %q err %v: want one event then the wrapped read error", got, err)
	}
}

// FuzzSSEReader: any byte stream parses without panic, within the line bound, and reading
// it in one-byte pieces gives the same events as reading it whole.
func FuzzSSEReader(f *testing.F) {
	f.Add([]byte("data: {\"a\":1}\n\n: ping\n\ndata: [DONE]\n\n"))
	f.Add([]byte("event: x\r\ndata: a\r\ndata: b\r\n\r\n"))
	f.Add([]byte("data"))
	f.Add([]byte("\n\n\ndata:\n\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		a, errA := readAllEvents(t, bytes.NewReader(in), 256)
		b, errB := readAllEvents(t, iotest.OneByteReader(bytes.NewReader(in)), 256)
		if (errA == nil) != (errB == nil) || len(a) != len(b) {
			t.Fatalf("whole vs one-byte: %q %v / %q %v", a, errA, b, errB)
		}
		for i := range a {
			if a[i] != b[i] {
				t.Fatalf("event %d differs: %q vs %q", i, a[i], b[i])
			}
		}
	})
}

func TestEventEndAndForEachData(t *testing.T) {
	in := []byte(": ping\n\ndata: {\"a\":1}\r\ndata:b\r\n\r\nevent: x\ndata\n\ndata: partial")
	var events [][]string
	rest := in
	for {
		n := EventEnd(rest)
		if n < 0 {
			break
		}
		var data []string
		ForEachData(rest[:n], func(st, en int) { data = append(data, string(rest[st:en])) })
		events = append(events, data)
		rest = rest[n:]
	}
	want := [][]string{nil, {`{"a":1}`, "b"}, {""}}
	if len(events) != len(want) || string(rest) != "data: partial" {
		t.Fatalf("events %q rest %q", events, rest)
	}
	for i := range want {
		if strings.Join(events[i], "|") != strings.Join(want[i], "|") || len(events[i]) != len(want[i]) {
			t.Fatalf("event %d: %q, want %q", i, events[i], want[i])
		}
	}
}

// FuzzSSEOneReading holds the two ways of reading events to one meaning: splitting bytes in
// hand with EventEnd and ForEachData (the picker) gives the same events' data as SSEReader
// over a stream (the load tester).
func FuzzSSEOneReading(f *testing.F) {
	f.Add([]byte("data: {\"a\":1}\n\n: ping\n\ndata: [DONE]\n\n"))
	f.Add([]byte("event: x\r\ndata: a\r\ndata: b\r\n\r\ndata"))
	f.Add([]byte("data:x\r\n\ndata:\n\n\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		// The events' data only (readAllEvents joins name and data with "|", which an
		// event name may itself contain).
		var want []string
		sr := NewSSEReader(bytes.NewReader(in), len(in)+1)
		for {
			ev, err := sr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, string(ev.Data))
		}
		var got []string
		rest := in
		for len(rest) > 0 {
			n := EventEnd(rest)
			if n < 0 {
				n = len(rest) // the last event, unterminated: dispatched at the end, as SSEReader does
			}
			var data [][]byte
			ForEachData(rest[:n], func(st, en int) { data = append(data, rest[st:en]) })
			if data != nil {
				got = append(got, string(bytes.Join(data, []byte("\n"))))
			}
			rest = rest[n:]
		}
		if len(got) != len(want) {
			t.Fatalf("%q: EventEnd/ForEachData %q, SSEReader %q", in, got, want)
		}
		for i := range got {
			if want[i] != got[i] {
				t.Fatalf("%q: event %d: %q vs SSEReader %q", in, i, got[i], want[i])
			}
		}
	})
}
