package kvroute

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/infergw/infergw/router"
)

// Oracle is a router.PrefixSource for the routing benchmark only: it asks every candidate
// pod (an infergw sim) what its engine really holds of the request's prompt, at pick time
// (POST /debug/prefix: the prefix cache plus the prompts of requests already admitted).
// No gateway can know that; the benchmark routes with it to show how close the precise
// scorer, fed by KV events, comes to routing on the pods' true cache state, with every
// other scorer unchanged.
type Oracle struct {
	port    int
	client  *http.Client
	timeout time.Duration
}

// NewOracle asks the sims on port (every pod's target port).
func NewOracle(port int) (*Oracle, error) {
	if port < 1 || port > 65535 {
		return nil, fmt.Errorf("oracle: port %d out of range", port)
	}
	return &Oracle{port: port, timeout: 500 * time.Millisecond,
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second}}}, nil
}

// oracleView is the sim's answer (sim.PrefixView; kvroute does not import the sim).
type oracleView struct {
	Blocks int `json:"blocks"`
	Held   int `json:"held"`
}

// MatchPrefix implements router.PrefixSource: every answering pod's match is exact; a pod
// that does not answer in time is left to the approximate scorer.
func (o *Oracle) MatchPrefix(req *router.Request, _ bool, hosts []string, hit, total []int, exact []router.PrefixExactness) any {
	if len(req.Body) == 0 {
		return nil
	}
	n := min(len(hosts), len(hit), len(total), len(exact))
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			v, err := o.ask(ctx, hosts[i], req.Body)
			if err != nil || v.Blocks == 0 {
				return
			}
			hit[i], total[i], exact[i] = min(v.Held, v.Blocks), v.Blocks, router.PrefixExact
		})
	}
	wg.Wait()
	return nil
}

func (o *Oracle) ask(ctx context.Context, host string, body []byte) (oracleView, error) {
	var v oracleView
	url := "http://" + net.JoinHostPort(host, strconv.Itoa(o.port)) + "/debug/prefix"
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return v, err
	}
	r.Header.Set("content-type", "application/json")
	resp, err := o.client.Do(r)
	if err != nil {
		return v, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return v, fmt.Errorf("oracle: %s: status %d", host, resp.StatusCode)
	}
	err = json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&v)
	return v, err
}

// Sent implements router.PrefixSource (the pods' own state needs no bookkeeping).
func (o *Oracle) Sent(any, string, int, int) router.PrefillWatcher { return nil }

var _ router.PrefixSource = (*Oracle)(nil)
