package wirescan

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestScannerWalk(t *testing.T) {
	doc := []byte(` {"Model":"m","x":[1,-2.5e3,true,false,null,{"y":"\u0041\n"}],"k\u0065y":null} `)
	s := New(doc)
	var keys []string
	err := s.Object(0, func(ks, ke int, esc bool) error {
		switch {
		case s.KeyIs(ks, ke, esc, "Model"):
			keys = append(keys, "Model")
		case KeyFold(s.Key(ks, ke, esc), "KEY"): // escaped and of another case: encoding/json's match
			keys = append(keys, "key")
			if !s.Null() {
				return errors.New("null not consumed")
			}
			return nil
		}
		return s.Skip(1)
	})
	if err != nil || s.End() != nil || strings.Join(keys, ",") != "Model,key" {
		t.Fatalf("keys %v err %v", keys, err)
	}
	if s := New(doc); s.KeyIs(2, 9, false, "model") {
		t.Fatal("KeyIs ignored case")
	}
	deep := []byte(strings.Repeat("[", 200) + strings.Repeat("]", 200))
	if s := New(deep); s.Skip(0) == nil {
		t.Fatal("nesting past DefaultMaxDepth accepted")
	}
	if s := (Scanner{B: deep, MaxDepth: 1000}); s.Skip(0) != nil || s.End() != nil {
		t.Fatal("nesting within MaxDepth refused")
	}
	for _, bad := range []string{`{"a":}`, `{"a" 1}`, `[1,]`, `"\x"`, "\"a\x01\"", `01`, `1.`, `tru`, `{}x`, `{"a":1,}`} {
		s := New([]byte(bad))
		if err := s.Skip(0); err == nil && s.End() == nil {
			t.Errorf("%q accepted", bad)
		} else if err != nil && !errors.Is(err, ErrSyntax) {
			t.Errorf("%q: error %v does not wrap ErrSyntax", bad, err)
		}
	}
}

// FuzzScannerMatchesJSON holds the scanner to encoding/json: within the depth bound it
// accepts exactly the documents json.Valid accepts, whatever the bytes.
func FuzzScannerMatchesJSON(f *testing.F) {
	for _, s := range []string{`{"a":[1,2,{"b":null}],"c":"\u00e9\n"}`, `[]`, `-0.0e+1`, `"\ud800"`, `{"a":1}}`, "\"\xff\""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		s := Scanner{B: in, MaxDepth: 10000}
		err := s.Skip(0)
		if err == nil {
			err = s.End()
		}
		// Invalid UTF-8 inside strings is valid to both (encoding/json replaces it on decode).
		if valid := json.Valid(in); valid != (err == nil) {
			t.Fatalf("%q: json.Valid %v, scanner error %v", in, valid, err)
		}
	})
}
