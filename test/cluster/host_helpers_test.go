package cluster

import (
	"reflect"
	"testing"
)

// These run without a cluster: the parsing the teardown relies on to find and delete rules.

func TestSplitRuleKeepsQuotedComments(t *testing.T) {
	got := splitRule(`INPUT -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS`)
	want := []string{"INPUT", "-m", "comment", "--comment", "kubernetes health check service ports", "-j", "KUBE-NODEPORTS"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("splitRule = %q, want %q", got, want)
	}
}

func TestDiffLines(t *testing.T) {
	got := diffLines("a\nb", "b\nc")
	if got != "  + c\n  - a" {
		t.Fatalf("diffLines = %q", got)
	}
	if diffLines("a\nb", "a\nb") != "" {
		t.Fatal("equal inputs differ")
	}
}

func TestUnescapeMount(t *testing.T) {
	if got := unescapeMount(`/tmp/a\040b`); got != "/tmp/a b" {
		t.Fatalf("unescapeMount = %q", got)
	}
}
