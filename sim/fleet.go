package sim

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
)

// FleetConfig describes N sims on consecutive loopback addresses sharing one port, the way
// local "pods" of a pool look to the gateway.
type FleetConfig struct {
	N int
	// FirstIP is the first sim's address (default 127.0.0.2); sim i listens on FirstIP+i.
	FirstIP string
	// Port is shared by every sim; 0 lets the first sim pick a free port that the others reuse.
	Port int
	// Base is every sim's configuration before Adapters adjusts it (Name and Addr are set by
	// the fleet).
	Base Config
	// Adapters, when set, adjusts sim i's configuration (typically its LoRA adapters).
	Adapters func(i int, c *Config)
}

// Fleet is a set of running sims.
type Fleet struct {
	servers []*Server
}

// StartFleet starts cfg.N sims named sim-0 … sim-(N-1) on FirstIP, FirstIP+1, … at one port.
func StartFleet(cfg FleetConfig, log *slog.Logger) (*Fleet, error) {
	if cfg.N < 1 {
		return nil, fmt.Errorf("sim fleet: N must be >= 1, got %d", cfg.N)
	}
	if cfg.FirstIP == "" {
		cfg.FirstIP = "127.0.0.2"
	}
	ip, err := netip.ParseAddr(cfg.FirstIP)
	if err != nil {
		return nil, fmt.Errorf("sim fleet: first IP: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := &Fleet{}
	port := cfg.Port
	for i := range cfg.N {
		if !ip.IsValid() {
			return nil, errors.Join(fmt.Errorf("sim fleet: ran out of addresses after %s", cfg.FirstIP), f.Close())
		}
		c := cfg.Base
		c.LoRAAdapters = append([]string(nil), cfg.Base.LoRAAdapters...)
		c.Name = "sim-" + strconv.Itoa(i)
		c.Addr = net.JoinHostPort(ip.String(), strconv.Itoa(port))
		if cfg.Adapters != nil {
			cfg.Adapters(i, &c)
		}
		s, err := New(c, log)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("sim fleet: %s: %w", c.Name, err), f.Close())
		}
		if err := s.Start(); err != nil {
			return nil, errors.Join(fmt.Errorf("sim fleet: %s: %w", c.Name, err), f.Close())
		}
		f.servers = append(f.servers, s)
		if port == 0 {
			_, p, _ := net.SplitHostPort(s.Addr())
			port, _ = strconv.Atoi(p)
		}
		ip = ip.Next()
	}
	return f, nil
}

// Servers returns the fleet's sims in address order.
func (f *Fleet) Servers() []*Server { return f.servers }

// Close stops every sim.
func (f *Fleet) Close() error {
	errs := make([]error, 0, len(f.servers))
	for _, s := range f.servers {
		errs = append(errs, s.Close())
	}
	return errors.Join(errs...)
}
