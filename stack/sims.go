package stack

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/infergw/infergw/discovery"
	"github.com/infergw/infergw/sim"
)

// simManager keeps one simulated model server running on every endpoint of every pool in
// the latest snapshot: the manifests' Pods are the fleet, so adding a Pod manifest adds a sim
// and removing it stops one, exactly as a Deployment scale would in a cluster.
type simManager struct {
	base sim.Config
	log  *slog.Logger

	mu      sync.Mutex
	running map[string]runningSim // by ip:port
}

type runningSim struct {
	srv  *sim.Server
	want simEndpoint
}

func newSimManager(base sim.Config, log *slog.Logger) *simManager {
	return &simManager{base: base, log: log, running: map[string]runningSim{}}
}

// Pool annotations that give a pool's local sims their identity (`infergw up` only; a
// cluster runs what the Pods say). Without them every sim serves the base configuration's
// model and adapters.
const (
	// AnnotationSimModel is the model the pool's sims serve.
	AnnotationSimModel = "infergw.dev/sim-model"
	// AnnotationSimLoRAAdapters lists the LoRA adapters the pool's sims serve
	// (comma-separated; present and empty means none).
	AnnotationSimLoRAAdapters = "infergw.dev/sim-lora-adapters"
)

// simEndpoint is what one sim should be: the pod's name and the model it serves.
type simEndpoint struct {
	name     string
	model    string
	adapters []string
}

func (e simEndpoint) same(o simEndpoint) bool {
	return e.name == o.name && e.model == o.model && strings.Join(e.adapters, ",") == strings.Join(o.adapters, ",")
}

// endpointAddrs lists every pool endpoint of a snapshot as ip:port, with the sim it needs.
func (m *simManager) endpointAddrs(snap *discovery.Snapshot) map[string]simEndpoint {
	out := map[string]simEndpoint{}
	for _, p := range snap.Pools {
		model, adapters := m.base.Model, m.base.LoRAAdapters
		if v := strings.TrimSpace(p.Annotations[AnnotationSimModel]); v != "" {
			model = v
		}
		if v, ok := p.Annotations[AnnotationSimLoRAAdapters]; ok {
			adapters = nil
			for _, a := range strings.Split(v, ",") {
				if a = strings.TrimSpace(a); a != "" {
					adapters = append(adapters, a)
				}
			}
		}
		for _, ep := range p.Endpoints {
			for _, port := range p.Spec.TargetPorts {
				addr := net.JoinHostPort(ep.IP, strconv.Itoa(int(port.Number)))
				out[addr] = simEndpoint{name: ep.Name, model: model, adapters: adapters}
			}
		}
	}
	return out
}

// sync starts sims for new endpoints, stops those whose endpoint is gone and restarts those
// whose model changed. A sim that cannot start (address in use, say) is reported and
// skipped: the rest keep serving.
func (m *simManager) sync(snap *discovery.Snapshot) error {
	want := m.endpointAddrs(snap)
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	for addr, r := range m.running {
		if w, ok := want[addr]; !ok || !w.same(r.want) {
			if err := r.srv.Close(); err != nil {
				errs = append(errs, fmt.Errorf("stop sim %s: %w", addr, err))
			}
			delete(m.running, addr)
			m.log.Info("sim stopped", "addr", addr)
		}
	}
	addrs := make([]string, 0, len(want))
	for addr := range want {
		addrs = append(addrs, addr)
	}
	sort.Strings(addrs)
	for _, addr := range addrs {
		if _, ok := m.running[addr]; ok {
			continue
		}
		w := want[addr]
		cfg := m.base
		cfg.Addr = addr
		cfg.Name = w.name
		cfg.Model, cfg.LoRAAdapters = w.model, w.adapters
		s, err := sim.New(cfg, m.log) // the sim adds its own sim=NAME to every line
		if err == nil {
			err = s.Start()
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("start sim %s (%s): %w", cfg.Name, addr, err))
			continue
		}
		m.running[addr] = runningSim{srv: s, want: w}
		m.log.Info("sim started", "name", cfg.Name, "addr", addr, "model", cfg.Model, "lora_adapters", cfg.LoRAAdapters)
	}
	return errors.Join(errs...)
}

// addrs returns the addresses of the running sims, sorted.
func (m *simManager) addrs() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.running))
	for a := range m.running {
		out = append(out, a)
	}
	sort.Strings(out)
	return out
}

func (m *simManager) closeAll() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	for addr, r := range m.running {
		if err := r.srv.Close(); err != nil {
			errs = append(errs, fmt.Errorf("stop sim %s: %w", addr, err))
		}
		delete(m.running, addr)
	}
	return errors.Join(errs...)
}
