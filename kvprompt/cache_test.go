package kvprompt

import (
	"fmt"
	"hash/maphash"
	"slices"
	"strings"
	"sync"
	"testing"
)

// uniqueWords returns n distinct words, each a piece of its own under every pre-tokenizer
// here (" " and lower-case letters).
func uniqueWords(from, n int) []string {
	words := make([]string, n)
	for i := range n {
		var sb strings.Builder
		sb.WriteByte(' ')
		for k := from + i; ; k /= 26 {
			sb.WriteByte(byte('a' + k%26))
			if k < 26 {
				break
			}
		}
		words[i] = sb.String()
	}
	return words
}

// TestPieceCacheBound: a peer sending ever new words cannot grow the piece cache past
// maxCachedPieces (it is emptied and refilled), and the ids stay right across the reset.
func TestPieceCacheBound(t *testing.T) {
	m, _ := loadGolden(t, "llama3ish")
	words := uniqueWords(0, maxCachedPieces+maxCachedPieces/2)
	resets := 0
	for at := 0; at < len(words); at += 1000 {
		chunk := words[at:min(at+1000, len(words))]
		before := m.fast.cache.count
		got, err := m.encode(nil, strings.Join(chunk, ""), false)
		if err != nil {
			t.Fatal(err)
		}
		var want []uint32
		for _, w := range chunk {
			want = naiveBPEAppend(want, m.fast.bpe, w)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("words %d..: ids differ from the BPE's without a cache", at)
		}
		c := &m.fast.cache
		if c.count > maxCachedPieces || len(c.text) > maxCachedPieces*maxCachedPieceBytes || len(c.ids) > maxCachedPieces*maxCachedPieceBytes {
			t.Fatalf("cache holds %d pieces, %d bytes, %d ids: over its bound", c.count, len(c.text), len(c.ids))
		}
		if c.count < before {
			resets++
		}
	}
	if resets == 0 {
		t.Fatalf("%d distinct pieces never filled the cache (%d held)", len(words), m.fast.cache.count)
	}
	// After the reset the pieces cached since are found, with their ids.
	last := words[len(words)-1]
	if ids, ok := m.fast.cache.get(last, maphash.String(m.fast.cache.seed, last)); !ok || !slices.Equal(ids, naiveBPE(m.fast.bpe, last)) {
		t.Fatalf("%q: cached %v %v", last, ids, ok)
	}
}

func naiveBPEAppend(dst []uint32, b *byteBPE, piece string) []uint32 {
	return append(dst, naiveBPE(b, piece)...)
}

// TestConcurrentEncode: concurrent prompts sharing and not sharing pieces, through one
// model's cache (run under -race), get the ids a model of their own computes.
func TestConcurrentEncode(t *testing.T) {
	for _, name := range tiktokenStyle {
		t.Run(name, func(t *testing.T) {
			shared, cases := loadGolden(t, name)
			const workers = 4
			texts := make([][]string, workers)
			for w := range workers {
				for i := range 60 {
					own := strings.Join(uniqueWords(w*10000+i*50, 50), "")
					texts[w] = append(texts[w], cases[(w*7+i)%len(cases)].Text+own+cases[i%len(cases)].Text)
				}
			}
			fresh := make([]*Model, workers) // each worker's own cache: the reference
			for w := range fresh {
				fresh[w], _ = loadGolden(t, name)
			}
			var wg sync.WaitGroup
			errs := make(chan error, workers)
			for w := range workers {
				wg.Go(func() {
					for _, text := range texts[w] {
						got, err := shared.encode(nil, text, true)
						if err != nil {
							errs <- err
							return
						}
						want, _ := fresh[w].encode(nil, text, true)
						if !slices.Equal(got, want) {
							errs <- fmt.Errorf("%q: %v, want %v", text, got, want)
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}

// TestPieceCacheGenerationWrap: after 65,535 resets the generation counter wraps; the
// slots are then cleared, so a piece cached 65,535 generations ago is not found.
func TestPieceCacheGenerationWrap(t *testing.T) {
	c := newPieceCache(maphash.MakeSeed())
	hash := func(s string) uint64 { return maphash.String(c.seed, s) }
	c.put(" old", hash(" old"), []uint32{7})
	if ids, ok := c.get(" old", hash(" old")); !ok || !slices.Equal(ids, []uint32{7}) {
		t.Fatalf("just cached: %v %v", ids, ok)
	}
	first := c.gen
	for range 1 << 16 {
		c.reset()
		if c.gen == first {
			break
		}
	}
	if c.gen != first {
		t.Fatalf("generation %d never came back to %d", c.gen, first)
	}
	if ids, ok := c.get(" old", hash(" old")); ok {
		t.Fatalf("a piece of the generation before the wrap is found: %v", ids)
	}
	c.put(" new", hash(" new"), []uint32{8, 9})
	if ids, ok := c.get(" new", hash(" new")); !ok || !slices.Equal(ids, []uint32{8, 9}) {
		t.Fatalf("cached after the wrap: %v %v", ids, ok)
	}
}

// FuzzPieceCache holds the piece cache to a map: any pieces (NUL-separated in the input),
// put and looked up in any order, come back with the ids they were put with.
func FuzzPieceCache(f *testing.F) {
	f.Add([]byte("a\x00b\x00a\x00 the\x00 th\x00 the"))
	f.Add([]byte("x\x00\x00y\x00xx\x00x"))
	c := newPieceCache(maphash.MakeSeed())
	f.Fuzz(func(t *testing.T, data []byte) {
		c.reset()
		want := map[string][]uint32{}
		for i, p := range strings.Split(string(data), "\x00") {
			if p == "" || len(p) > maxCachedPieceBytes {
				continue
			}
			h := maphash.String(c.seed, p)
			got, ok := c.get(p, h)
			w, seen := want[p]
			if ok != seen || !slices.Equal(got, w) {
				t.Fatalf("piece %d %q: cache %v %v, want %v %v", i, p, got, ok, w, seen)
			}
			if !seen {
				ids := make([]uint32, 1+i%len(p))
				for k := range ids {
					ids[k] = uint32(i*31 + k)
				}
				c.put(p, h, ids)
				want[p] = ids
			}
		}
	})
}
