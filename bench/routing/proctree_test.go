package main

import (
	"os"
	"os/exec"
	"testing"
	"time"
)

func TestParseProcStatNameWithSpacesAndParens(t *testing.T) {
	// A command name may hold spaces and ')' ("(sd-pam)", "tmux: server"): fields are
	// counted after the last ')'. utime 250 + stime 50 ticks = 3 s.
	line := "4242 (a) b (c)) S 17 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 100 0 0"
	st, err := parseProcStat(4242, line)
	if err != nil {
		t.Fatal(err)
	}
	if st.ppid != 17 || st.comm != "a) b (c)" || st.cpu != 3*time.Second {
		t.Fatalf("parsed %+v", st)
	}
	if _, err := parseProcStat(1, "1 (x) S 0"); err == nil {
		t.Fatal("a short line parsed without error")
	}
}

// TestSampleTreeCountsDescendants burns CPU in a grandchild (sh -> sh -> busy loop) and
// checks that the root's tree, not the root alone, is charged for it.
func TestSampleTreeCountsDescendants(t *testing.T) {
	cmd := exec.Command("sh", "-c", `sh -c 'i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; sleep 30' & wait`)
	if err := cmd.Start(); err != nil {
		t.Skipf("no sh: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		tree, err := sampleTree(cmd.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		root, err := readProcStat(cmd.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		if tree.total() >= 200*time.Millisecond {
			if root.cpu >= tree.total() {
				t.Fatalf("the tree (%v) is not more than its root (%v): descendants were not counted", tree.total(), root.cpu)
			}
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("the busy grandchild's CPU never showed in the tree")
}

func TestSampleTreeOfMissingProcess(t *testing.T) {
	if _, err := sampleTree(os.Getpid() + 1<<22); err == nil {
		t.Fatal("a process that does not exist was sampled")
	}
}
