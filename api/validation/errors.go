// Package validation checks infergw's resources against the rules their CRDs enforce in a
// cluster (OpenAPI markers and CEL rules), so that manifests read from a directory get the
// same checks as objects admitted by a kube-apiserver. Every error names the field path.
package validation

import (
	"errors"
	"fmt"
	"strings"
)

// FieldError is one violated rule: the field path (e.g. spec.targetPorts[1].number) and
// what is wrong with it.
type FieldError struct {
	Field  string
	Detail string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Detail }

// Errors is a list of field errors; the empty list means valid.
type Errors []*FieldError

// Err returns the errors joined into one error, or nil when there are none.
func (es Errors) Err() error {
	if len(es) == 0 {
		return nil
	}
	errs := make([]error, len(es))
	for i, e := range es {
		errs[i] = e
	}
	return errors.Join(errs...)
}

// String joins the messages with "; ".
func (es Errors) String() string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = e.Error()
	}
	return strings.Join(parts, "; ")
}

func (es *Errors) add(field, format string, args ...any) {
	*es = append(*es, &FieldError{Field: field, Detail: fmt.Sprintf(format, args...)})
}
