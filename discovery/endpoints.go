package discovery

import (
	"cmp"
	"slices"

	corev1 "k8s.io/api/core/v1"

	infv1 "github.com/infergw/infergw/api/v1"
)

// PodReady reports whether a pod can take traffic: it has an IP, is not being deleted, and
// its Ready condition is True.
func PodReady(pod *corev1.Pod) bool {
	if pod == nil || pod.Status.PodIP == "" || pod.DeletionTimestamp != nil {
		return false
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// SelectorMatches reports whether labels satisfy every matchLabels entry of a pool. An
// empty selector matches nothing (validation rejects it; a pool must not swallow a whole
// namespace by accident).
func SelectorMatches(sel infv1.LabelSelector, labels map[string]string) bool {
	if len(sel.MatchLabels) == 0 {
		return false
	}
	for k, v := range sel.MatchLabels {
		got, ok := labels[string(k)]
		if !ok || got != string(v) {
			return false
		}
	}
	return true
}

// podLabelKey indexes ready pods by namespace and one label pair, so that a pool only
// examines pods that carry at least one of its selector's labels instead of every pod
// (1,000 pools × 10,000 pods would otherwise be ten million label checks per snapshot).
type podLabelKey struct {
	namespace, key, value string
}

type readyPodIndex map[podLabelKey][]*corev1.Pod

func indexReadyPods(pods []*corev1.Pod) readyPodIndex {
	idx := make(readyPodIndex)
	for _, pod := range pods {
		if !PodReady(pod) {
			continue
		}
		for k, v := range pod.Labels {
			lk := podLabelKey{namespace: pod.Namespace, key: k, value: v}
			idx[lk] = append(idx[lk], pod)
		}
	}
	return idx
}

// selectEndpoints returns the pool's ready endpoints sorted by pod name. It looks up the
// candidates of the selector pair with the fewest pods, then checks the full selector.
func (idx readyPodIndex) selectEndpoints(pool *infv1.InferencePool) []Endpoint {
	sel := pool.Spec.Selector
	if len(sel.MatchLabels) == 0 {
		return nil
	}
	var candidates []*corev1.Pod
	first := true
	for k, v := range sel.MatchLabels {
		pods := idx[podLabelKey{namespace: pool.Namespace, key: string(k), value: string(v)}]
		if first || len(pods) < len(candidates) {
			candidates, first = pods, false
		}
		if len(candidates) == 0 {
			return nil
		}
	}
	endpoints := make([]Endpoint, 0, len(candidates))
	for _, pod := range candidates {
		if SelectorMatches(sel, pod.Labels) {
			endpoints = append(endpoints, Endpoint{
				Name:      pod.Name,
				Namespace: pod.Namespace,
				IP:        pod.Status.PodIP,
				Labels:    pod.Labels,
			})
		}
	}
	slices.SortFunc(endpoints, func(a, b Endpoint) int { return cmp.Compare(a.Name, b.Name) })
	return endpoints
}
