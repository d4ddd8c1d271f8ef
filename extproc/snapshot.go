package extproc

import (
	"github.com/infergw/infergw/discovery"
	"github.com/infergw/infergw/model"
)

// ApplySnapshot resolves the snapshot (package model) and makes its pools, objectives and
// rewrites current (applyModel). The first call makes the server ready.
func (s *Server) ApplySnapshot(snap *discovery.Snapshot) {
	if snap == nil {
		return
	}
	s.applyModel(model.Resolve(snap, model.Options{}), s.baseModelsOf(snap))
}
