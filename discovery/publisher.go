package discovery

import "sync"

// Publisher holds the latest snapshot and fans new ones out to subscribers. It implements
// the Current and Subscribe halves of Source; both sources embed one. The zero value is
// ready to use and every method is safe for concurrent use.
type Publisher struct {
	mu      sync.Mutex
	current *Snapshot
	subs    map[*subscription]struct{}
}

type subscription struct {
	ch   chan *Snapshot
	once sync.Once
}

// Publish makes snap the current snapshot and offers it to every subscriber. A subscriber
// that has not yet read the previous snapshot has it replaced, so a slow reader only ever
// sees the newest state and Publish never blocks. Snapshots whose version is not greater
// than the current one are ignored (and reported false), so versions seen by consumers only
// go up even if two writers race.
func (p *Publisher) Publish(snap *Snapshot) bool {
	if snap == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.current != nil && snap.Version <= p.current.Version {
		return false
	}
	p.current = snap
	for sub := range p.subs {
		offerLatest(sub.ch, snap)
	}
	return true
}

// offerLatest puts snap into a capacity-one channel, replacing an unread older value. It is
// only called with the publisher's lock held, so nobody else sends on ch concurrently.
func offerLatest(ch chan *Snapshot, snap *Snapshot) {
	select {
	case <-ch:
	default:
	}
	ch <- snap // cannot block: the channel is empty and only we send.
}

// Current returns the latest snapshot, or nil before the first Publish.
func (p *Publisher) Current() *Snapshot {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.current
}

// NextVersion returns the version the next published snapshot should carry.
func (p *Publisher) NextVersion() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.current == nil {
		return 1
	}
	return p.current.Version + 1
}

// Subscribe returns a channel of new snapshots (capacity one, stale values replaced) and a
// function that ends the subscription and closes the channel. When a snapshot already
// exists the channel starts with it, so a subscriber never misses the state that was
// current when it subscribed. The cancel function may be called more than once.
func (p *Publisher) Subscribe() (<-chan *Snapshot, func()) {
	sub := &subscription{ch: make(chan *Snapshot, 1)}
	p.mu.Lock()
	if p.subs == nil {
		p.subs = make(map[*subscription]struct{})
	}
	p.subs[sub] = struct{}{}
	if p.current != nil {
		sub.ch <- p.current
	}
	p.mu.Unlock()

	cancel := func() {
		sub.once.Do(func() {
			p.mu.Lock()
			delete(p.subs, sub)
			close(sub.ch)
			p.mu.Unlock()
		})
	}
	return sub.ch, cancel
}

// Subscribers returns the number of active subscriptions (for tests and metrics).
func (p *Publisher) Subscribers() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.subs)
}
