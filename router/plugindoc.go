package router

import (
	"fmt"
	"io"
	"reflect"
	"strings"
	"time"
)

// WriteReference writes the Markdown reference of every registered plugin type: its kind,
// names, default weight, what it does and its parameters (JSON name, type, default and
// meaning, read from the parameter struct's json and doc tags). The router's README holds
// the built-ins' reference; `infergw picker --list-plugins` prints every registered one.
func (r *Registry) WriteReference(w io.Writer) error {
	var b strings.Builder
	kind := Kind("")
	for _, t := range r.Types() {
		if t.Kind != kind {
			kind = t.Kind
			fmt.Fprintf(&b, "#### %s plugins\n\n", strings.ToUpper(string(kind[:1]))+string(kind[1:]))
		}
		fmt.Fprintf(&b, "**`%s`**", t.Type)
		var names []string
		if t.ShortName != "" {
			names = append(names, fmt.Sprintf("infergw's format: `%s`", t.ShortName))
		}
		if len(t.Aliases) > 0 {
			names = append(names, "also `"+strings.Join(t.Aliases, "`, `")+"`")
		}
		if t.Kind == KindScorer {
			names = append(names, fmt.Sprintf("default weight %g", t.DefaultWeight))
		}
		if len(names) > 0 {
			fmt.Fprintf(&b, " (%s)", strings.Join(names, "; "))
		}
		fmt.Fprintf(&b, ": %s\n\n", t.Doc)
		rows := paramRows(t.params, reflect.ValueOf(t.defaults))
		if len(rows) == 0 {
			b.WriteString("Parameters: none.\n\n")
			continue
		}
		b.WriteString("| parameter | type | default | meaning |\n|---|---|---|---|\n")
		for _, row := range rows {
			fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", row[0], row[1], row[2], row[3])
		}
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// paramRows lists a parameter struct's JSON fields: name, type, default, meaning.
func paramRows(t reflect.Type, defaults reflect.Value) [][4]string {
	if t == nil || t.Kind() != reflect.Struct {
		return nil
	}
	var rows [][4]string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if !f.IsExported() || name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		def := "—"
		if v := defaults.Field(i); !(v.Kind() == reflect.Pointer && v.IsNil()) {
			def = fmt.Sprintf("`%v`", reflect.Indirect(v).Interface())
		}
		rows = append(rows, [4]string{name, jsonTypeName(f.Type), def, f.Tag.Get("doc")})
	}
	return rows
}

func jsonTypeName(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == reflect.TypeFor[time.Duration]() {
		return "duration"
	}
	switch t.Kind() {
	case reflect.Bool:
		return "bool"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.String:
		return "string"
	case reflect.Slice, reflect.Array:
		return "list of " + jsonTypeName(t.Elem())
	case reflect.Map, reflect.Struct:
		return "object"
	}
	return t.String()
}
