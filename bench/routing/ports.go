package main

import (
	"fmt"
	"net"
	"strconv"
)

// freePort asks the kernel for a free TCP port on host and releases it at once. Another
// process could take it before the stack binds it; the run then fails with a clear "address
// in use" error instead of measuring something else.
func freePort(host string) (int, error) {
	lis, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("find a free port on %s: %w", host, err)
	}
	defer lis.Close()
	return lis.Addr().(*net.TCPAddr).Port, nil
}

// freePortOnAll finds one port that is free on every host (the pods share the pool's target
// port on their distinct loopback addresses).
func freePortOnAll(hosts []string) (int, error) {
	for attempt := 0; attempt < 50; attempt++ {
		port, err := freePort(hosts[0])
		if err != nil {
			return 0, err
		}
		ok := true
		for _, h := range hosts[1:] {
			lis, err := net.Listen("tcp", net.JoinHostPort(h, strconv.Itoa(port)))
			if err != nil {
				ok = false
				break
			}
			lis.Close()
		}
		if ok {
			return port, nil
		}
	}
	return 0, fmt.Errorf("no port free on all of %v after 50 attempts", hosts)
}
