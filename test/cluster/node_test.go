package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Addresses of the one-node cluster. The node IP is a /32 on lo (the kernel has no dummy
// links); Pods live on a CNI bridge; Services get ClusterIPs that only kube-proxy's iptables
// rules know.
const (
	nodeIP      = "10.99.0.1"
	nodeName    = "infergw-node"
	podCIDR     = "10.88.0.0/16"
	serviceCIDR = "10.96.0.0/16"
	bridgeName  = "infergw0"
	apiPort     = 6443
)

// proc is one process the harness started and will stop.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

// node is the running cluster: its processes, files and host changes.
type node struct {
	bin      string // directory of the Kubernetes binaries
	dir      string // scratch directory, unique to this run
	pki      *pki
	host     *hostState
	procs    []*proc
	admin    string // admin kubeconfig
	ctrSock  string
	logf     func(string, ...any)
	started  time.Time
	etcdURL  string
	apiURL   string
	imageTag string
}

func (n *node) auditLog() string { return n.path("logs", "audit.log") }

func (n *node) path(elem ...string) string { return filepath.Join(append([]string{n.dir}, elem...)...) }

// start runs name with args, its output in logs/<name>.log. The process gets its own process
// group, so that a Ctrl-C of the test does not reach it before the teardown stops it in order.
func (n *node) start(name, binary string, args ...string) (*proc, error) {
	logPath := n.path("logs", name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(binary, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	n.procs = append(n.procs, p)
	n.logf("started %s (pid %d), log %s", name, cmd.Process.Pid, logPath)
	return p, nil
}

// stop sends SIGTERM and waits up to grace before SIGKILL.
func (p *proc) stop(grace time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (n *node) pids() []int {
	var pids []int
	for _, p := range n.procs {
		pids = append(pids, p.cmd.Process.Pid)
	}
	return pids
}

func (n *node) proc(name string) *proc {
	for _, p := range n.procs {
		if p.name == name {
			return p
		}
	}
	return nil
}

// waitFor polls check until it returns nil, a process of the node exits, or timeout.
func (n *node) waitFor(what string, timeout time.Duration, check func() error) error {
	start := time.Now()
	deadline := start.Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if last = check(); last == nil {
			n.logf("%s after %.1fs", what, time.Since(start).Seconds())
			return nil
		}
		for _, p := range n.procs {
			select {
			case <-p.done:
				return fmt.Errorf("waiting for %s: %s exited (%v); last lines of %s:\n%s", what, p.name, p.err, p.log, tailFile(p.log, 30))
			default:
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("%s: not after %s: %w", what, timeout, last)
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return lastLines(b, n)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startNode brings the whole cluster up; on error the caller still calls teardown, which
// undoes whatever part was done.
func (n *node) startNode(ctx context.Context, images []string) error {
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"} {
		if _, err := os.Stat(filepath.Join(n.bin, b)); err != nil {
			return fmt.Errorf("binary %s: %w (test/k8sbin/build.sh --cluster builds it)", b, err)
		}
	}
	for _, d := range []string{"logs", "etcd", "containerd", "cni/net.d", "cni/ipam", "kubelet", "pod-logs", "config"} {
		if err := os.MkdirAll(n.path(d), 0o755); err != nil {
			return err
		}
	}
	if err := n.host.addNodeIP(); err != nil {
		return err
	}
	if err := n.writePKI(); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	if err := n.startEtcd(); err != nil {
		return err
	}
	if err := n.startAPIServer(); err != nil {
		return err
	}
	if err := n.startContainerd(images); err != nil {
		return err
	}
	if err := n.startKubelet(); err != nil {
		return err
	}
	if err := n.startKubeProxy(); err != nil {
		return err
	}
	return n.startControllers()
}

func (n *node) writePKI() error {
	p, err := newPKI(n.path("pki"))
	if err != nil {
		return err
	}
	n.pki = p
	apiIPs := []net.IP{net.ParseIP(nodeIP), net.ParseIP("10.96.0.1"), net.ParseIP("127.0.0.1")}
	apiNames := []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}
	certs := []struct {
		name, cn string
		orgs     []string
		ips      []net.IP
		dns      []string
	}{
		{"apiserver", "kube-apiserver", nil, apiIPs, apiNames},
		{"apiserver-kubelet-client", "kube-apiserver-kubelet-client", []string{"system:masters"}, nil, nil},
		{"admin", "infergw-test-admin", []string{"system:masters"}, nil, nil},
		{"kubelet", "system:node:" + nodeName, []string{"system:nodes"}, nil, nil},
		{"kube-proxy", "system:kube-proxy", nil, nil, nil},
		{"controller-manager", "system:kube-controller-manager", nil, nil, nil},
		{"scheduler", "system:kube-scheduler", nil, nil, nil},
	}
	for _, c := range certs {
		if err := p.issue(c.name, c.cn, c.orgs, c.ips, c.dns); err != nil {
			return err
		}
	}
	if err := p.serviceAccountKey(); err != nil {
		return err
	}
	n.apiURL = fmt.Sprintf("https://%s:%d", nodeIP, apiPort)
	for _, c := range []string{"admin", "kubelet", "kube-proxy", "controller-manager", "scheduler"} {
		path, err := p.kubeconfig(c, n.apiURL)
		if err != nil {
			return err
		}
		if c == "admin" {
			n.admin = path
		}
	}
	return nil
}

func (n *node) startEtcd() error {
	client, err := freePort()
	if err != nil {
		return err
	}
	peer, err := freePort()
	if err != nil {
		return err
	}
	n.etcdURL = fmt.Sprintf("http://127.0.0.1:%d", client)
	if _, err := n.start("etcd", filepath.Join(n.bin, "etcd"),
		"--data-dir", n.path("etcd"),
		"--listen-client-urls", n.etcdURL, "--advertise-client-urls", n.etcdURL,
		"--listen-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", peer),
		"--initial-advertise-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", peer),
		"--initial-cluster", fmt.Sprintf("default=http://127.0.0.1:%d", peer),
		"--unsafe-no-fsync", "--quota-backend-bytes", strconv.Itoa(2<<30),
	); err != nil {
		return err
	}
	return n.waitFor("etcd healthy", time.Minute, func() error { return httpOK(plainClient(), n.etcdURL+"/health") })
}

func (n *node) startAPIServer() error {
	p := n.pki.path
	auditPolicy := n.path("config", "audit-policy.yaml")
	if err := os.WriteFile(auditPolicy, []byte(`apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
    userGroups: ["system:serviceaccounts:`+testNamespace+`"]
  - level: None
`), 0o644); err != nil {
		return err
	}
	if _, err := n.start("kube-apiserver", filepath.Join(n.bin, "kube-apiserver"),
		"--etcd-servers", n.etcdURL,
		"--bind-address", nodeIP, "--advertise-address", nodeIP, "--secure-port", strconv.Itoa(apiPort),
		"--service-cluster-ip-range", serviceCIDR,
		"--client-ca-file", p("ca.crt"),
		"--tls-cert-file", p("apiserver.crt"), "--tls-private-key-file", p("apiserver.key"),
		"--kubelet-client-certificate", p("apiserver-kubelet-client.crt"),
		"--kubelet-client-key", p("apiserver-kubelet-client.key"),
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file", p("sa.pub"),
		"--service-account-signing-key-file", p("sa.key"),
		"--authorization-mode", "Node,RBAC",
		"--cert-dir", n.path("apiserver-certs"),
		"--profiling=false",
		// Every request of the chart's ServiceAccounts, with its response code: the RBAC test
		// fails on any 403 among them.
		"--audit-policy-file", auditPolicy,
		"--audit-log-path", n.auditLog(),
	); err != nil {
		return err
	}
	client, err := n.tlsClient("admin")
	if err != nil {
		return err
	}
	return n.waitFor("kube-apiserver ready", 2*time.Minute, func() error { return httpOK(client, n.apiURL+"/readyz") })
}

// tlsClient is an HTTP client with the named client certificate, trusting the cluster CA.
func (n *node) tlsClient(name string) (*http.Client, error) {
	cert, err := tls.LoadX509KeyPair(n.pki.path(name+".crt"), n.pki.path(name+".key"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(n.pki.caCert)
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS12},
	}}, nil
}

func plainClient() *http.Client { return &http.Client{Timeout: 5 * time.Second} }

func httpOK(c *http.Client, url string) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

func (n *node) startContainerd(images []string) error {
	n.ctrSock = n.path("containerd", "containerd.sock")
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q
[grpc]
  address = %q
[ttrpc]
  address = %q
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = %q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  # The VM's root lacks CAP_SYS_RESOURCE: runc cannot lower oom_score_adj below the
  # runtime's own, so every sandbox would fail to start without this.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = false
      Root = %q
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %q
`, n.path("containerd", "root"), n.path("containerd", "state"), n.ctrSock, n.ctrSock+".ttrpc", n.path("containerd", "opt"),
		"localhost/infergw/pause:"+n.imageTag, n.path("containerd", "runc"), n.path("cni", "net.d"))
	cfgPath := n.path("config", "containerd.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	conflist := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "infergw-test",
  "plugins": [{
    "type": "bridge",
    "bridge": %q,
    "isGateway": true,
    "ipMasq": false,
    "hairpinMode": true,
    "ipam": {
      "type": "host-local",
      "ranges": [[{"subnet": %q}]],
      "routes": [{"dst": "0.0.0.0/0"}],
      "dataDir": %q
    }
  }]
}
`, bridgeName, podCIDR, n.path("cni", "ipam"))
	if err := os.WriteFile(n.path("cni", "net.d", "10-infergw-test.conflist"), []byte(conflist), 0o644); err != nil {
		return err
	}
	if _, err := n.start("containerd", "containerd", "--config", cfgPath); err != nil {
		return err
	}
	if err := n.waitFor("containerd serving", time.Minute, func() error {
		return exec.Command("ctr", "--address", n.ctrSock, "version").Run()
	}); err != nil {
		return err
	}
	for _, img := range images {
		start := time.Now()
		out, err := exec.Command("ctr", "--address", n.ctrSock, "-n", "k8s.io", "images", "import", img).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ctr images import %s: %w: %s", img, err, out)
		}
		n.logf("imported %s in %.1fs: %s", filepath.Base(img), time.Since(start).Seconds(), strings.TrimSpace(string(out)))
	}
	return nil
}

func (n *node) startControllers() error {
	p := n.pki.path
	if _, err := n.start("kube-controller-manager", filepath.Join(n.bin, "kube-controller-manager"),
		"--kubeconfig", p("controller-manager.kubeconfig"),
		"--authentication-kubeconfig", p("controller-manager.kubeconfig"),
		"--authorization-kubeconfig", p("controller-manager.kubeconfig"),
		"--leader-elect=false",
		"--bind-address", nodeIP,
		"--use-service-account-credentials=true",
		"--service-account-private-key-file", p("sa.key"),
		"--root-ca-file", p("ca.crt"),
		"--cluster-signing-cert-file", p("ca.crt"), "--cluster-signing-key-file", p("ca.key"),
		"--service-cluster-ip-range", serviceCIDR,
		"--allocate-node-cidrs=false",
		"--cert-dir", n.path("controller-manager-certs"),
	); err != nil {
		return err
	}
	_, err := n.start("kube-scheduler", filepath.Join(n.bin, "kube-scheduler"),
		"--kubeconfig", p("scheduler.kubeconfig"),
		"--authentication-kubeconfig", p("scheduler.kubeconfig"),
		"--authorization-kubeconfig", p("scheduler.kubeconfig"),
		"--leader-elect=false",
		"--bind-address", nodeIP,
		"--cert-dir", n.path("scheduler-certs"),
	)
	return err
}

func (n *node) startKubelet() error {
	cfg := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This kernel mounts cgroup v1 (with a v2 hierarchy beside it); kubelet 1.37 refuses v1
# unless told otherwise.
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://%s
failSwapOn: false
address: %s
port: 10250
readOnlyPort: 0
healthzPort: 0
podLogsDir: %s
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: %s
authorization:
  mode: Webhook
# A shared test machine: do not evict Pods for disk or memory the other users take.
evictionHard:
  nodefs.available: "1%%"
  nodefs.inodesFree: "1%%"
  imagefs.available: "1%%"
  memory.available: "100Mi"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
`, n.ctrSock, nodeIP, n.path("pod-logs"), n.pki.path("ca.crt"))
	cfgPath := n.path("config", "kubelet.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	_, err := n.start("kubelet", filepath.Join(n.bin, "kubelet"),
		"--config", cfgPath,
		"--kubeconfig", n.pki.path("kubelet.kubeconfig"),
		"--root-dir", n.path("kubelet"),
		"--cert-dir", n.path("kubelet", "pki"),
		"--node-ip", nodeIP,
		"--hostname-override", nodeName,
	)
	return err
}

func (n *node) startKubeProxy() error {
	cfg := fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
hostnameOverride: %s
bindAddress: %s
healthzBindAddress: %s:10256
metricsBindAddress: %s:10249
clientConnection:
  kubeconfig: %s
clusterCIDR: %s
nodePortAddresses: ["%s/32"]
# Masquerade Service traffic, so that a Pod's reply to another Pod on the bridge that reached
# it through a ClusterIP goes back through the host and is un-NATed.
iptables:
  masqueradeAll: true
  # No NodePorts on 127.0.0.1: that would need route_localnet on the host.
  localhostNodePorts: false
# The VM does not let kube-proxy set the conntrack sysctls; zero means leave them alone.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`, nodeName, nodeIP, nodeIP, nodeIP, n.pki.path("kube-proxy.kubeconfig"), podCIDR, nodeIP)
	cfgPath := n.path("config", "kube-proxy.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	_, err := n.start("kube-proxy", filepath.Join(n.bin, "kube-proxy"), "--config", cfgPath)
	return err
}

// stopAll stops the node's processes in reverse dependency order: the Pods' managers first,
// then the runtime (and the containers it left, found by this run's socket path), then the
// API server and etcd.
func (n *node) stopAll() {
	for _, name := range []string{"kube-proxy", "kube-scheduler", "kube-controller-manager", "kubelet"} {
		if p := n.proc(name); p != nil {
			n.logf("stopping %s", name)
			p.stop(15 * time.Second)
		}
	}
	if p := n.proc("containerd"); p != nil {
		n.removeContainers()
		n.logf("stopping containerd")
		p.stop(15 * time.Second)
		// Shims outlive containerd by design; they name this run's socket on their command line.
		if left := pidsMentioning(n.dir, n.pids()); len(left) > 0 {
			n.logf("stopping %d shim/container processes of this run: %v", len(left), left)
			stopPIDs(left, 10*time.Second)
		}
	}
	for _, name := range []string{"kube-apiserver", "etcd"} {
		if p := n.proc(name); p != nil {
			n.logf("stopping %s", name)
			p.stop(15 * time.Second)
		}
	}
}

// removeContainers stops and removes every container and sandbox left in containerd's k8s.io
// namespace, so their mounts and network namespaces go too.
func (n *node) removeContainers() {
	ctr := func(args ...string) ([]byte, error) {
		return exec.Command("ctr", append([]string{"--address", n.ctrSock, "-n", "k8s.io"}, args...)...).CombinedOutput()
	}
	out, err := ctr("containers", "list", "-q")
	if err != nil {
		n.logf("ctr containers list: %v: %s", err, out)
		return
	}
	ids := strings.Fields(string(out))
	if len(ids) > 0 {
		n.logf("removing %d containers left in containerd", len(ids))
	}
	for _, id := range ids {
		_, _ = ctr("tasks", "kill", "-s", "SIGKILL", id)
	}
	time.Sleep(500 * time.Millisecond)
	for _, id := range ids {
		_, _ = ctr("tasks", "delete", "-f", id)
		_, _ = ctr("containers", "delete", id)
	}
}

var errNotRoot = errors.New("the cluster test needs root (it adds an address, a bridge, iptables rules and mounts)")
