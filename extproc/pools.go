package extproc

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
)

// weightedPool is one entry of the x-infergw-pools metadata.
type weightedPool struct {
	name   string
	weight int
}

// parsePools parses "ns/a[=w][,ns/b[=w]…]". Weights default to 1; a zero weight keeps the
// pool out of the draw.
func parsePools(v string) ([]weightedPool, error) {
	var out []weightedPool
	for _, item := range strings.Split(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, w, hasW := strings.Cut(item, "=")
		weight := 1
		if hasW {
			n, err := strconv.Atoi(strings.TrimSpace(w))
			if err != nil || n < 0 {
				return nil, fmt.Errorf("pool list %q: bad weight %q for %q", v, w, name)
			}
			weight = n
		}
		name = strings.TrimSpace(name)
		if ns, n, ok := strings.Cut(name, "/"); !ok || ns == "" || n == "" {
			return nil, fmt.Errorf("pool list %q: %q is not namespace/name", v, name)
		}
		out = append(out, weightedPool{name: name, weight: weight})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("pool list %q names no pool", v)
	}
	return out, nil
}

// choosePool draws one pool by weight. If every weight is zero the first pool wins.
func choosePool(pools []weightedPool) string {
	total := 0
	for _, p := range pools {
		total += p.weight
	}
	if total == 0 {
		return pools[0].name
	}
	n := rand.IntN(total)
	for _, p := range pools {
		if n < p.weight {
			return p.name
		}
		n -= p.weight
	}
	return pools[len(pools)-1].name
}
