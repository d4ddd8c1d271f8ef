// Package buildinfo reports the version of the running binary.
package buildinfo

import "runtime/debug"

// Version is set at link time by the Makefile (-X); a plain `go build` falls back to the
// module's VCS information.
var Version = ""

// String returns a human-readable version line.
func String() string {
	v := Version
	rev := ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v == "" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				rev = s.Value[:12]
			}
		}
		v += " (" + bi.GoVersion
		if rev != "" {
			v += ", " + rev
		}
		v += ")"
	}
	return "infergw " + v
}
