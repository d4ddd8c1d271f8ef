package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/infergw/infergw/loadtest"
)

// recipe is the `infergw loadtest` command that sends exactly the load of cfg (same seed,
// so the same request sequence), for rerunning one cell by hand against any gateway.
func recipe(cfg loadtest.Config) string {
	args := []string{"infergw", "loadtest", "--url", cfg.URL}
	for _, m := range cfg.Models {
		args = append(args, "--model", m.Name+"="+strconv.FormatFloat(m.Weight, 'g', -1, 64))
	}
	args = append(args,
		"--rate", strconv.FormatFloat(cfg.Rate, 'f', 2, 64),
		"--arrival", cfg.Arrival,
		"--warmup", cfg.Warmup.String(),
		"--duration", cfg.Duration.String(),
		"--seed", strconv.FormatUint(cfg.Seed, 10),
		"--timeout", cfg.Timeout.String(),
		"--grace", cfg.GracePeriod.String(),
	)
	w := cfg.Workload
	switch w.Kind {
	case "shared-prefix":
		args = append(args, "--workload", "shared-prefix", "--groups", strconv.Itoa(w.Groups),
			"--prefix-tokens", strconv.Itoa(w.PrefixTokens), "--suffix-tokens", strconv.Itoa(w.SuffixTokens),
			"--output-tokens", lengthFlag(w.Output))
	case "sharegpt":
		args = append(args, "--sharegpt", w.ShareGPTFile)
	default:
		args = append(args, "--workload", "synthetic", "--input-tokens", lengthFlag(w.Input),
			"--output-tokens", lengthFlag(w.Output))
	}
	return strings.Join(args, " ")
}

// lengthFlag renders a LengthDist in the CLI syntax loadtest.ParseLengthDist reads.
func lengthFlag(d loadtest.LengthDist) string {
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	switch d.Kind {
	case "uniform":
		return fmt.Sprintf("uniform:%d:%d", d.Min, d.Max)
	case "normal":
		return "normal:" + f(d.Mean) + ":" + f(d.StdDev)
	default:
		return f(d.Mean)
	}
}
