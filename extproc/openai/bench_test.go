package openai

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// chatBody builds a chat request of about size bytes.
func chatBody(size int) []byte {
	msg := strings.Repeat("lorem ipsum dolor sit amet ", size/27+1)[:size]
	return fmt.Appendf(nil, `{"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[{"role":"system","content":"You are helpful."},{"role":"user","content":%q}],"stream":true,"max_tokens":128}`, msg)
}

func BenchmarkParse(b *testing.B) {
	for _, size := range []int{4 << 10, 200 << 10} {
		body := chatBody(size)
		b.Run(fmt.Sprintf("scanner/%dKB", size>>10), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			var r Request
			for b.Loop() {
				if err := Parse(body, &r); err != nil {
					b.Fatal(err)
				}
			}
		})
		// encoding/json with a tight struct, for comparison (the alternative considered).
		b.Run(fmt.Sprintf("encoding_json/%dKB", size>>10), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				var v struct {
					Model    string `json:"model"`
					Messages []struct {
						Role    string          `json:"role"`
						Content json.RawMessage `json:"content"`
					} `json:"messages"`
				}
				if err := json.Unmarshal(body, &v); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
