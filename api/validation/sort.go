package validation

import (
	"cmp"
	"maps"
	"slices"
)

// sortedKeys returns a map's keys in order, so that errors come out in a stable order.
func sortedKeys[K cmp.Ordered, V any](m map[K]V) []K {
	return slices.Sorted(maps.Keys(m))
}
