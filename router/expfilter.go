package router

import "bytes"

// A model server's exposition is mostly series the router never reads: latency and token
// histograms, counters, process metrics. The expfmt parser turns every series into
// objects, so a scrape used to cost most of its CPU on them. keepFamilies passes on only
// the lines of the families the engine's router reads (their # TYPE lines and samples)
// and the parser sees just those. # HELP lines are dropped too: the router never reads
// them, and parsing their text was an eighth of a filtered scrape's CPU.

// families are the metric families extractMetrics reads for an engine.
func (eng engine) families() []string {
	switch eng {
	case engineSGLang:
		return []string{sglangWaiting, sglangRunning, sglangKV}
	case engineTRTLLM:
		return []string{trtllmWaiting, trtllmRunning, trtllmKV}
	default:
		return []string{vllmWaiting, vllmRunning, vllmKV, vllmKVLegacy, vllmLoRAInfo, vllmCacheConfig}
	}
}

// keepFamilies appends to dst the lines of text that belong to one of families, each
// ending in a newline.
func keepFamilies(dst, text []byte, families []string) []byte {
	for len(text) > 0 {
		line := text
		if i := bytes.IndexByte(text, '\n'); i >= 0 {
			line, text = text[:i+1], text[i+1:]
		} else {
			text = nil
		}
		name := lineFamily(line)
		if name == nil || !containsName(families, name) || isHelp(line) {
			continue
		}
		dst = append(dst, line...)
		if line[len(line)-1] != '\n' {
			dst = append(dst, '\n')
		}
	}
	return dst
}

// isHelp reports whether a line lineFamily named is a "# HELP" line.
func isHelp(line []byte) bool {
	l := bytes.TrimLeft(line, " \t")
	return len(l) > 0 && l[0] == '#' && bytes.HasPrefix(bytes.TrimLeft(l[1:], " \t"), []byte("HELP"))
}

func containsName(names []string, name []byte) bool {
	for _, n := range names {
		if n == string(name) {
			return true
		}
	}
	return false
}

// lineFamily is the metric name a text-format line is about: the sample's name, or the
// name in a "# HELP name …" or "# TYPE name …" line. Other lines (blank lines, other
// comments) give nil. A name ends at the first byte that cannot be in a metric name, where
// the expfmt parser ends it too.
func lineFamily(line []byte) []byte {
	l := bytes.TrimLeft(line, " \t")
	if len(l) == 0 {
		return nil
	}
	if l[0] != '#' {
		return nameToken(l)
	}
	l = bytes.TrimLeft(l[1:], " \t")
	if !bytes.HasPrefix(l, []byte("HELP")) && !bytes.HasPrefix(l, []byte("TYPE")) {
		return nil
	}
	rest := l[4:]
	if len(rest) == 0 || (rest[0] != ' ' && rest[0] != '\t') {
		return nil
	}
	return nameToken(bytes.TrimLeft(rest, " \t"))
}

// nameToken is the leading metric name of l ([a-zA-Z_:][a-zA-Z0-9_:]*), or nil.
func nameToken(l []byte) []byte {
	for i, c := range l {
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c == ':'
		if letter || (i > 0 && c >= '0' && c <= '9') {
			continue
		}
		if i == 0 {
			return nil
		}
		return l[:i]
	}
	return l
}
