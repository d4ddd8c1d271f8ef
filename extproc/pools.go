package extproc

import (
	"math/rand/v2"

	"github.com/infergw/infergw/contract"
)

// parsePools reads the x-infergw-pools metadata (contract.ParsePools: the control plane
// writes it with contract.EncodePools).
func parsePools(v string) ([]contract.WeightedPool, error) { return contract.ParsePools(v) }

// choosePool draws one pool by weight. If every weight is zero the first pool wins.
func choosePool(pools []contract.WeightedPool) string {
	total := uint64(0)
	for _, p := range pools {
		total += uint64(p.Weight)
	}
	if total == 0 {
		return pools[0].Key
	}
	n := rand.Uint64N(total)
	for _, p := range pools {
		if n < uint64(p.Weight) {
			return p.Key
		}
		n -= uint64(p.Weight)
	}
	return pools[len(pools)-1].Key
}
