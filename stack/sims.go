package stack

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strconv"
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
	running map[string]*sim.Server // by ip:port
}

func newSimManager(base sim.Config, log *slog.Logger) *simManager {
	return &simManager{base: base, log: log, running: map[string]*sim.Server{}}
}

// endpointAddrs lists every pool endpoint of a snapshot as ip:port, with the pod's name.
func endpointAddrs(snap *discovery.Snapshot) map[string]string {
	out := map[string]string{}
	for _, p := range snap.Pools {
		for _, ep := range p.Endpoints {
			for _, port := range p.Spec.TargetPorts {
				addr := net.JoinHostPort(ep.IP, strconv.Itoa(int(port.Number)))
				out[addr] = ep.Name
			}
		}
	}
	return out
}

// sync starts sims for new endpoints and stops those whose endpoint is gone. A sim that
// cannot start (address in use, say) is reported and skipped: the rest keep serving.
func (m *simManager) sync(snap *discovery.Snapshot) error {
	want := endpointAddrs(snap)
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	for addr, s := range m.running {
		if _, ok := want[addr]; !ok {
			if err := s.Close(); err != nil {
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
		cfg := m.base
		cfg.Addr = addr
		cfg.Name = want[addr]
		s, err := sim.New(cfg, m.log) // the sim adds its own sim=NAME to every line
		if err == nil {
			err = s.Start()
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("start sim %s (%s): %w", cfg.Name, addr, err))
			continue
		}
		m.running[addr] = s
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
	for addr, s := range m.running {
		if err := s.Close(); err != nil {
			errs = append(errs, fmt.Errorf("stop sim %s: %w", addr, err))
		}
		delete(m.running, addr)
	}
	return errors.Join(errs...)
}
