package dirsource

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/infergw/infergw/discovery"
)

// DefaultDirDebounce is the default of DirOptions.Debounce. (discovery.DefaultGatewayClass, shared
// with the Kubernetes source, is declared in kube.go.)
const DefaultDirDebounce = 200 * time.Millisecond

// DirOptions configures a DirSource.
type DirOptions struct {
	// GatewayClass selects the Gateways to serve (spec.gatewayClassName); default "infergw".
	GatewayClass string
	// Debounce is how long the directory must be quiet after a change before it is read
	// again, so that one save (often several filesystem events) gives one reload; default
	// 200ms.
	Debounce time.Duration
	// Registerer receives the source's metrics; nil registers none.
	Registerer prometheus.Registerer
}

// DirSource reads resources from a directory of YAML manifests, watches it, and publishes a
// snapshot after every change that leaves the directory valid. An invalid change is
// rejected whole: the last good snapshot keeps serving and LastError reports why.
type DirSource struct {
	dir     string
	opts    DirOptions
	log     *slog.Logger
	metrics *dirMetrics
	pub     discovery.Publisher

	// reloadMu serialises reloads; the fields below it are guarded by stateMu so that
	// LastError never waits for a reload.
	reloadMu   sync.Mutex
	goodDigest uint64
	hasGood    bool

	stateMu sync.Mutex
	lastErr error
}

var _ discovery.Source = (*DirSource)(nil)

// NewDirSource checks that dir is a readable directory and registers the metrics. Nothing
// is read until Run (or Reload).
func NewDirSource(dir string, opts DirOptions, log *slog.Logger) (*DirSource, error) {
	if dir == "" {
		return nil, errors.New("discovery: manifest directory is empty")
	}
	info, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("discovery: manifest directory: %w", err)
	}
	if !info.IsDir() {
		return nil, fmt.Errorf("discovery: manifest directory %s is not a directory", dir)
	}
	if opts.GatewayClass == "" {
		opts.GatewayClass = discovery.DefaultGatewayClass
	}
	if opts.Debounce <= 0 {
		opts.Debounce = DefaultDirDebounce
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newDirMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	return &DirSource{dir: filepath.Clean(dir), opts: opts, log: log.With("source", "dir", "dir", dir), metrics: m}, nil
}

// Current returns the last good snapshot, or nil before the first.
func (s *DirSource) Current() *discovery.Snapshot { return s.pub.Current() }

// Subscribe returns a channel of new snapshots; see Source.
func (s *DirSource) Subscribe() (<-chan *discovery.Snapshot, func()) { return s.pub.Subscribe() }

// LastError returns why the latest reload was rejected, or nil when it succeeded.
func (s *DirSource) LastError() error {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	return s.lastErr
}

// Run watches the directory and reloads it after each burst of changes until ctx is done,
// then returns nil. The first read happens after the watch is set up, so no change is
// missed; if that first read fails, Run returns its error (a gateway must not start from a
// directory it cannot serve).
func (s *DirSource) Run(ctx context.Context) error {
	watcher, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("discovery: watch %s: %w", s.dir, err)
	}
	defer watcher.Close()
	if err := s.watchTree(watcher); err != nil {
		return fmt.Errorf("discovery: watch %s: %w", s.dir, err)
	}
	if err := s.Reload(); err != nil {
		return fmt.Errorf("discovery: initial load of %s: %w", s.dir, err)
	}

	debounce := time.NewTimer(s.opts.Debounce)
	debounce.Stop()
	defer debounce.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-watcher.Events:
			if !ok {
				return errors.New("discovery: directory watcher closed")
			}
			if ev.Has(fsnotify.Create) {
				// A new subdirectory must be watched before files appear in it.
				if info, err := os.Stat(ev.Name); err == nil && info.IsDir() {
					if err := s.watchTree(watcher); err != nil {
						s.log.Warn("cannot watch new directory", "path", ev.Name, "err", err)
					}
				}
			}
			debounce.Reset(s.opts.Debounce)
		case err, ok := <-watcher.Errors:
			if !ok {
				return errors.New("discovery: directory watcher closed")
			}
			// An overflow loses events: read the directory again to be sure.
			s.log.Warn("directory watch error; reloading", "err", err)
			debounce.Reset(s.opts.Debounce)
		case <-debounce.C:
			if err := s.watchTree(watcher); err != nil {
				s.log.Warn("cannot watch directory tree", "err", err)
			}
			_ = s.Reload() // logged and counted inside
		}
	}
}

// watchTree adds a watch on the directory and every non-hidden subdirectory (fsnotify does
// not recurse). Adding an existing watch is a no-op.
func (s *DirSource) watchTree(w *fsnotify.Watcher) error {
	root := s.dir + string(filepath.Separator)
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		if path != root && strings.HasPrefix(d.Name(), ".") {
			return filepath.SkipDir
		}
		return w.Add(path)
	})
}

// Reload reads the directory now. When every file and object is valid and something
// changed, it publishes a new snapshot; when anything is invalid it publishes nothing,
// records and counts the error and returns it. It is safe to call concurrently with Run.
func (s *DirSource) Reload() error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()

	files, err := readManifestDir(s.dir)
	if err == nil {
		digest := digestFiles(files)
		if s.hasGood && digest == s.goodDigest {
			s.succeeded("unchanged", s.pub.Current().Version)
			return nil
		}
		var objs discovery.Objects
		if objs, err = parseManifests(files); err == nil {
			snap := discovery.Build(s.pub.NextVersion(), objs, s.opts.GatewayClass)
			s.goodDigest, s.hasGood = digest, true
			// Clear LastError before subscribers see the snapshot, so that nobody observes
			// the new state together with the old error.
			s.succeeded("published", snap.Version)
			s.pub.Publish(snap)
			s.log.Info("manifests loaded", "version", snap.Version, "files", len(files),
				"gateways", len(snap.Gateways), "routes", len(snap.HTTPRoutes), "pools", len(snap.Pools),
				"endpoints", countSnapshotEndpoints(snap), "objectives", len(snap.Objectives), "rewrites", len(snap.Rewrites))
			return nil
		}
	}
	s.stateMu.Lock()
	s.lastErr = err
	s.stateMu.Unlock()
	s.metrics.reloadErrors.Inc()
	s.metrics.reloads.WithLabelValues("error").Inc()
	version := uint64(0)
	if cur := s.pub.Current(); cur != nil {
		version = cur.Version
	}
	s.log.Error("manifests rejected; the last good snapshot keeps serving", "serving_version", version, "err", err)
	return err
}

func (s *DirSource) succeeded(result string, version uint64) {
	s.stateMu.Lock()
	recovered := s.lastErr != nil
	s.lastErr = nil
	s.stateMu.Unlock()
	if recovered {
		// The error was logged when it came; say as loudly that it is gone.
		s.log.Info("manifests accepted again after an error", "version", version, "result", result)
	}
	s.metrics.reloads.WithLabelValues(result).Inc()
	s.metrics.goodVersion.Set(float64(version))
	s.metrics.lastSuccess.SetToCurrentTime()
}

func countSnapshotEndpoints(snap *discovery.Snapshot) int {
	n := 0
	for _, p := range snap.Pools {
		n += len(p.Endpoints)
	}
	return n
}
