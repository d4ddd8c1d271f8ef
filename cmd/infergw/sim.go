package main

import (
	"fmt"
	"net"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/infergw/infergw/sim"
)

// newSimCmd runs one simulated vLLM server, or a fleet of them on 127.0.0.2… with --fleet.
func newSimCmd() *cobra.Command {
	cfg := sim.DefaultConfig()
	var (
		fleet    int
		firstIP  string
		logLevel string
	)
	var kvEventsConfig string
	cmd := &cobra.Command{
		Use:   "sim",
		Short: "Run a vLLM-compatible simulated model server (engine model, OpenAI API, vLLM metrics)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(logLevel)
			if err != nil {
				return err
			}
			if kvEventsConfig != "" {
				if cfg.KVEvents, err = sim.ParseKVEventsConfig(kvEventsConfig); err != nil {
					return err
				}
			}
			ctx := cmd.Context()
			if fleet > 0 {
				_, portText, err := net.SplitHostPort(cfg.Addr)
				if err != nil {
					return fmt.Errorf("--addr: %w", err)
				}
				port, err := strconv.Atoi(portText)
				if err != nil {
					return fmt.Errorf("--addr port: %w", err)
				}
				f, err := sim.StartFleet(sim.FleetConfig{N: fleet, FirstIP: firstIP, Port: port, Base: cfg}, log)
				if err != nil {
					return err
				}
				for _, s := range f.Servers() {
					fmt.Fprintf(cmd.OutOrStdout(), "%s http://%s\n", s.Name(), s.Addr())
				}
				<-ctx.Done()
				return f.Close()
			}
			s, err := sim.New(cfg, log)
			if err != nil {
				return err
			}
			if err := s.Start(); err != nil {
				return err
			}
			<-ctx.Done()
			return s.Close()
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&cfg.Addr, "addr", cfg.Addr, "listen address (with --fleet only the port is used)")
	fl.StringVar(&cfg.Name, "name", "", "instance name for the x-sim-instance header (default: the listen address)")
	fl.StringVar(&cfg.Model, "model", cfg.Model, "served base model name")
	fl.StringSliceVar(&cfg.LoRAAdapters, "lora-adapters", nil, "LoRA adapters served from the start (comma-separated)")
	fl.IntVar(&cfg.MaxLoRAs, "max-loras", cfg.MaxLoRAs, "LoRA adapter slots in the running batch")
	fl.IntVar(&cfg.MaxNumSeqs, "max-num-seqs", cfg.MaxNumSeqs, "maximum running sequences")
	fl.IntVar(&cfg.KVBlocks, "kv-blocks", cfg.KVBlocks, "KV-cache blocks")
	fl.IntVar(&cfg.BlockSize, "block-size", cfg.BlockSize, "tokens per KV-cache block")
	fl.IntVar(&cfg.MaxNumBatchedTokens, "max-num-batched-tokens", cfg.MaxNumBatchedTokens, "token budget per engine step (chunked prefill)")
	fl.IntVar(&cfg.MaxModelLen, "max-model-len", cfg.MaxModelLen, "maximum prompt + output tokens per request")
	fl.DurationVar(&cfg.StepOverhead, "step-overhead", cfg.StepOverhead, "modelled fixed cost of one engine step")
	fl.DurationVar(&cfg.PrefillPerToken, "prefill-per-token", cfg.PrefillPerToken, "modelled cost per prefill token")
	fl.DurationVar(&cfg.DecodePerSeq, "decode-per-seq", cfg.DecodePerSeq, "modelled cost per decoding sequence in a step")
	fl.DurationVar(&cfg.LoRALoadCost, "lora-load-cost", cfg.LoRALoadCost, "modelled cost of loading an adapter into a slot")
	fl.Float64Var(&cfg.TimeScale, "time-scale", cfg.TimeScale, "multiplier for every modelled duration (0.01 = 100x faster)")
	fl.Int64Var(&cfg.MaxBodyBytes, "max-body-bytes", cfg.MaxBodyBytes, "largest accepted request body")
	fl.Float64Var(&cfg.Faults.ErrorRate, "fault-error-rate", 0, "share of generation requests answered 500 (fault injection; off by default)")
	fl.Float64Var(&cfg.Faults.ResetRate, "fault-reset-rate", 0, "share of generation requests whose connection is reset (fault injection)")
	fl.DurationVar(&cfg.Faults.FirstByteDelay, "fault-first-byte-delay", 0, "hold every generation request this long before answering (fault injection)")
	fl.IntVar(&fleet, "fleet", 0, "start N sims named sim-0… on consecutive loopback IPs at --addr's port")
	fl.StringVar(&firstIP, "fleet-first-ip", "127.0.0.2", "address of the first fleet sim")
	fl.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fl.StringVar(&kvEventsConfig, "kv-events-config", "", `publish KV-cache events as vLLM does, same JSON as vLLM's flag: {"enable_kv_cache_events":true,"publisher":"zmq","endpoint":"tcp://HOST:PORT","topic":"kv@IP@MODEL"} (topic default: kv@<sim IP>@<model>)`)
	fl.StringVar(&cfg.Tokenizer, "tokenizer", "", "directory with a Hugging Face tokenizer.json (+ tokenizer_config.json): tokenize as that model does (default: a built-in approximation)")
	return cmd
}
