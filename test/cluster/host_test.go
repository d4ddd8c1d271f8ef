package cluster

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"time"
)

// Sysctls the cluster's parts change: the bridge plugin turns on ip_forward; the kubelet sets
// the kernel tunables it wants (protectKernelDefaults off); kube-proxy may touch route_localnet
// and the bridge netfilter switch. Each is recorded before and written back after.
var watchedSysctls = []string{
	"net/ipv4/ip_forward",
	"net/ipv4/conf/all/route_localnet",
	"net/bridge/bridge-nf-call-iptables",
	"net/bridge/bridge-nf-call-ip6tables",
	"vm/overcommit_memory",
	"vm/panic_on_oom",
	"kernel/panic",
	"kernel/panic_on_oops",
	"kernel/keys/root_maxkeys",
	"kernel/keys/root_maxbytes",
}

// Host paths the kubelet, containerd and the CNI plugins write outside the scratch directory
// whatever their configuration says. Those that did not exist before are removed after.
var fixedPaths = []string{
	"/var/log/containers",
	"/var/log/pods",
	"/var/lib/cni",
	"/run/netns",
	"/var/run/netns",
	"/run/containerd",
	"/var/lib/kubelet",
	"/var/lib/containerd",
	"/etc/cni",
	"/opt/cni",
	"/opt/containerd",
}

// hostState is what the host looked like before the cluster started.
type hostState struct {
	sysctls   map[string]string
	iptables  map[string]string // iptables-save / ip6tables-save output, normalised
	links     map[string]bool
	cgroups   map[string]bool // kubepods* directories under /sys/fs/cgroup
	paths     map[string]bool // fixedPaths that existed
	netns     map[string]bool
	hadAddr   bool
	scratch   string
	nodeIP    string
	bridge    string
	addedAddr bool
}

func snapshotHost(scratch, nodeIP, bridge string) (*hostState, error) {
	h := &hostState{scratch: scratch, nodeIP: nodeIP, bridge: bridge, sysctls: map[string]string{}, paths: map[string]bool{}}
	for _, s := range watchedSysctls {
		if b, err := os.ReadFile("/proc/sys/" + s); err == nil {
			h.sysctls[s] = strings.TrimSpace(string(b))
		}
	}
	var err error
	if h.iptables, err = iptablesRules(); err != nil {
		return nil, err
	}
	if h.links, err = linkNames(); err != nil {
		return nil, err
	}
	if h.links[bridge] {
		return nil, fmt.Errorf("link %s already exists: another cluster run is active or left it behind", bridge)
	}
	h.cgroups = kubeCgroups()
	for _, p := range fixedPaths {
		if _, err := os.Lstat(p); err == nil {
			h.paths[p] = true
		}
	}
	h.netns = netnsNames()
	h.hadAddr = loHasAddr(nodeIP)
	if h.hadAddr {
		return nil, fmt.Errorf("%s is already on lo: another cluster run is active or left it behind", nodeIP)
	}
	return h, nil
}

// addNodeIP puts the node's address on lo as a /32 (the kernel has no dummy links).
func (h *hostState) addNodeIP() error {
	if err := run("ip", "addr", "add", h.nodeIP+"/32", "dev", "lo"); err != nil {
		return err
	}
	h.addedAddr = true
	return nil
}

// undo reverts every host change after the cluster's processes have stopped. It keeps going
// after errors and returns them all.
func (h *hostState) undo(kubeProxy string, logf func(string, ...any)) error {
	var errs []error
	// kube-proxy removes its own chains (iptables, ipvs and nftables modes).
	if kubeProxy != "" {
		if out, err := exec.Command(kubeProxy, "--cleanup").CombinedOutput(); err != nil {
			logf("kube-proxy --cleanup: %v: %s", err, lastLines(out, 5))
		}
	}
	// The kubelet's chains (KUBE-FIREWALL, KUBE-KUBELET-CANARY, …) and anything kube-proxy left.
	for _, tool := range []string{"iptables", "ip6tables"} {
		if err := removeKubeChains(tool); err != nil {
			errs = append(errs, err)
		}
	}
	// Mounts under the scratch directory (kubelet volumes, containerd rootfs and shm), deepest
	// first, then network namespaces the run created.
	if err := unmountUnder(h.scratch); err != nil {
		errs = append(errs, err)
	}
	for name := range netnsNames() {
		if h.netns[name] {
			continue
		}
		for _, dir := range []string{"/run/netns", "/var/run/netns"} {
			p := filepath.Join(dir, name)
			_ = syscall.Unmount(p, syscall.MNT_DETACH)
			_ = os.Remove(p)
		}
	}
	// Links: the bridge, and veths the run created that survived their Pods.
	links, _ := linkNames()
	for name := range links {
		if !h.links[name] && (name == h.bridge || strings.HasPrefix(name, "veth")) {
			if err := run("ip", "link", "del", name); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if h.addedAddr {
		if err := run("ip", "addr", "del", h.nodeIP+"/32", "dev", "lo"); err != nil {
			errs = append(errs, err)
		}
	}
	for s, v := range h.sysctls {
		if err := os.WriteFile("/proc/sys/"+s, []byte(v), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("restore sysctl %s=%s: %w", s, v, err))
		}
	}
	// cgroups the kubelet created, children first.
	cgs := kubeCgroups()
	var dirs []string
	for d := range cgs {
		if !h.cgroups[d] {
			dirs = append(dirs, d)
		}
	}
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	for _, d := range dirs {
		if err := os.Remove(d); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove cgroup: %w", err))
		}
	}
	for _, p := range fixedPaths {
		if !h.paths[p] {
			if err := os.RemoveAll(p); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := os.RemoveAll(h.scratch); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// leftovers compares the host with the snapshot and lists every difference: the run's own
// processes still alive, mounts, iptables rules, links, the lo address, sysctls, cgroups and
// paths. Empty means the host is as it was.
func (h *hostState) leftovers(pids []int) []string {
	var left []string
	for _, pid := range pids {
		if processAlive(pid) {
			left = append(left, fmt.Sprintf("process %d still running", pid))
		}
	}
	for _, pid := range pidsMentioning(h.scratch, nil) {
		left = append(left, fmt.Sprintf("process %d still uses %s", pid, h.scratch))
	}
	if mounts, err := mountsUnder(h.scratch); err == nil {
		for _, m := range mounts {
			left = append(left, "mount "+m)
		}
	}
	for name := range netnsNames() {
		if !h.netns[name] {
			left = append(left, "network namespace "+name)
		}
	}
	now, err := iptablesRules()
	if err != nil {
		left = append(left, err.Error())
	}
	for tool, rules := range now {
		if rules != h.iptables[tool] {
			left = append(left, fmt.Sprintf("%s rules differ from before the run:\n%s", tool, diffLines(h.iptables[tool], rules)))
		}
	}
	links, _ := linkNames()
	for name := range links {
		if !h.links[name] {
			left = append(left, "link "+name)
		}
	}
	if loHasAddr(h.nodeIP) {
		left = append(left, "address "+h.nodeIP+" on lo")
	}
	for s, v := range h.sysctls {
		if b, err := os.ReadFile("/proc/sys/" + s); err == nil && strings.TrimSpace(string(b)) != v {
			left = append(left, fmt.Sprintf("sysctl %s = %s, was %s", s, strings.TrimSpace(string(b)), v))
		}
	}
	for d := range kubeCgroups() {
		if !h.cgroups[d] {
			left = append(left, "cgroup "+d)
		}
	}
	for _, p := range fixedPaths {
		if _, err := os.Lstat(p); err == nil && !h.paths[p] {
			left = append(left, "path "+p)
		}
	}
	if _, err := os.Lstat(h.scratch); err == nil {
		left = append(left, "scratch directory "+h.scratch)
	}
	return left
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// counters strips packet counters so that two saves of the same rules compare equal.
var counters = regexp.MustCompile(`\[\d+:\d+\]`)

// iptablesRules returns iptables-save and ip6tables-save without comments and counters.
func iptablesRules() (map[string]string, error) {
	rules := map[string]string{}
	for _, tool := range []string{"iptables-save", "ip6tables-save"} {
		out, err := exec.Command(tool).Output()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", tool, err)
		}
		// Rules and user chains, per table. Built-in chain headers are left out: iptables-nft
		// lists a table once anything has used it, and an empty built-in table changes nothing.
		var keep []string
		table := ""
		for _, line := range strings.Split(string(out), "\n") {
			switch {
			case strings.HasPrefix(line, "*"):
				table = line
			case strings.HasPrefix(line, "-"):
				keep = append(keep, table+" "+line)
			case strings.HasPrefix(line, ":") && strings.Contains(line, " - "):
				keep = append(keep, table+" "+counters.ReplaceAllString(line, ""))
			}
		}
		sort.Strings(keep)
		rules[tool] = strings.Join(keep, "\n")
	}
	return rules, nil
}

// removeKubeChains deletes, in every table, the rules that jump to a KUBE-* chain and then
// the KUBE-* chains themselves.
func removeKubeChains(tool string) error {
	var errs []error
	for _, table := range []string{"filter", "nat", "mangle", "raw"} {
		out, err := exec.Command(tool, "-w", "-t", table, "-S").Output()
		if err != nil {
			continue // table not present
		}
		var chains []string
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			switch {
			case len(f) >= 2 && f[0] == "-N" && strings.HasPrefix(f[1], "KUBE-"):
				chains = append(chains, f[1])
			case len(f) >= 2 && f[0] == "-A" && !strings.HasPrefix(f[1], "KUBE-") && strings.Contains(line, " KUBE-"):
				// A rule in a built-in chain that references a KUBE- chain: delete it by spec.
				args := append([]string{"-w", "-t", table, "-D"}, splitRule(line[len("-A "):])...)
				if err := run(tool, args...); err != nil {
					errs = append(errs, err)
				}
			}
		}
		for _, c := range chains {
			_ = run(tool, "-w", "-t", table, "-F", c)
		}
		for _, c := range chains {
			if err := run(tool, "-w", "-t", table, "-X", c); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// splitRule splits an iptables -S rule into arguments, keeping quoted strings whole.
func splitRule(s string) []string {
	var args []string
	var cur strings.Builder
	inQuote := false
	for _, r := range s {
		switch {
		case r == '"':
			inQuote = !inQuote
		case r == ' ' && !inQuote:
			if cur.Len() > 0 {
				args = append(args, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteRune(r)
		}
	}
	if cur.Len() > 0 {
		args = append(args, cur.String())
	}
	return args
}

func linkNames() (map[string]bool, error) {
	entries, err := os.ReadDir("/sys/class/net")
	if err != nil {
		return nil, err
	}
	names := map[string]bool{}
	for _, e := range entries {
		names[e.Name()] = true
	}
	return names, nil
}

func loHasAddr(ip string) bool {
	out, err := exec.Command("ip", "-o", "addr", "show", "dev", "lo").Output()
	return err == nil && bytes.Contains(out, []byte(" "+ip+"/"))
}

func kubeCgroups() map[string]bool {
	found := map[string]bool{}
	roots, _ := filepath.Glob("/sys/fs/cgroup/*")
	roots = append(roots, "/sys/fs/cgroup")
	for _, root := range roots {
		matches, _ := filepath.Glob(filepath.Join(root, "kubepods*"))
		for _, m := range matches {
			_ = filepath.WalkDir(m, func(p string, d os.DirEntry, err error) error {
				if err == nil && d.IsDir() {
					found[p] = true
				}
				return nil
			})
		}
	}
	return found
}

func netnsNames() map[string]bool {
	names := map[string]bool{}
	for _, dir := range []string{"/run/netns", "/var/run/netns"} {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			names[e.Name()] = true
		}
	}
	return names
}

// mountsUnder lists mount points at or below dir, deepest first.
func mountsUnder(dir string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var mounts []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			mounts = append(mounts, mp)
		}
	}
	sort.Slice(mounts, func(i, j int) bool { return len(mounts[i]) > len(mounts[j]) })
	return mounts, sc.Err()
}

func unescapeMount(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

func unmountUnder(dir string) error {
	var errs []error
	for attempt := 0; attempt < 3; attempt++ {
		mounts, err := mountsUnder(dir)
		if err != nil || len(mounts) == 0 {
			return err
		}
		errs = errs[:0]
		for _, m := range mounts {
			if err := syscall.Unmount(m, 0); err != nil {
				if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
					errs = append(errs, fmt.Errorf("unmount %s: %w", m, err))
				}
			}
		}
	}
	return errors.Join(errs...)
}

func processAlive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	// A zombie is not running; the test reaps its children, so this is a grandchild's.
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	if i := bytes.LastIndexByte(b, ')'); i > 0 && i+2 < len(b) && b[i+2] == 'Z' {
		return false
	}
	return true
}

// pidsMentioning lists live processes whose command line contains s: the containerd shims
// and containers of this run, all named by paths inside the run's unique scratch directory.
// Processes in except (those the harness started itself and stops by PID) are left out.
func pidsMentioning(s string, except []int) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	skip := map[int]bool{os.Getpid(): true}
	for _, pid := range except {
		skip[pid] = true
	}
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil || skip[pid] {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !bytes.Contains(cmdline, []byte(s)) {
			continue
		}
		if processAlive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// stopPIDs sends SIGTERM, waits up to grace, then SIGKILL.
func stopPIDs(pids []int, grace time.Duration) {
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		alive := false
		for _, pid := range pids {
			if processAlive(pid) {
				alive = true
			}
		}
		if !alive {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, pid := range pids {
		if processAlive(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func diffLines(before, after string) string {
	b := map[string]bool{}
	for _, l := range strings.Split(before, "\n") {
		b[l] = true
	}
	a := map[string]bool{}
	var out []string
	for _, l := range strings.Split(after, "\n") {
		a[l] = true
		if !b[l] {
			out = append(out, "  + "+l)
		}
	}
	for _, l := range strings.Split(before, "\n") {
		if !a[l] {
			out = append(out, "  - "+l)
		}
	}
	return strings.Join(out, "\n")
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
