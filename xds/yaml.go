package xds

import (
	"bytes"
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"
)

// YAML renders the resources as readable YAML (protojson, then YAML), grouped by kind. It is
// what the golden files hold and what `infergw controlplane` logs at debug level.
func (r *Resources) YAML() ([]byte, error) {
	var buf bytes.Buffer
	groups := []struct {
		kind string
		msgs []proto.Message
	}{
		{"listeners", toMessages(r.Listeners)},
		{"routes", toMessages(r.Routes)},
		{"clusters", toMessages(r.Clusters)},
		{"endpoints", toMessages(r.Endpoints)},
	}
	for _, g := range groups {
		fmt.Fprintf(&buf, "%s:\n", g.kind)
		for _, m := range g.msgs {
			doc, err := messageYAML(m)
			if err != nil {
				return nil, err
			}
			writeListItem(&buf, doc)
		}
	}
	if len(r.Warnings) > 0 {
		buf.WriteString("warnings:\n")
		for _, w := range r.Warnings {
			doc, err := yaml.Marshal(w)
			if err != nil {
				return nil, fmt.Errorf("warning to yaml: %w", err)
			}
			writeListItem(&buf, doc)
		}
	}
	return buf.Bytes(), nil
}

func messageYAML(m proto.Message) ([]byte, error) {
	js, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("%T to json: %w", m, err)
	}
	doc, err := yaml.JSONToYAML(js)
	if err != nil {
		return nil, fmt.Errorf("%T to yaml: %w", m, err)
	}
	return doc, nil
}

// writeListItem indents a YAML document as one item of a top-level list.
func writeListItem(buf *bytes.Buffer, doc []byte) {
	lines := bytes.Split(bytes.TrimRight(doc, "\n"), []byte("\n"))
	for i, l := range lines {
		if i == 0 {
			buf.WriteString("- ")
		} else {
			buf.WriteString("  ")
		}
		buf.Write(l)
		buf.WriteByte('\n')
	}
}

func toMessages[T proto.Message](s []T) []proto.Message {
	out := make([]proto.Message, len(s))
	for i, m := range s {
		out[i] = m
	}
	return out
}
