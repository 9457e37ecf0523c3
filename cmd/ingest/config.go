package main

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// checkHostPort accepts "host:port" with a port of 0-65535; the host may
// be empty (all interfaces).
func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %w", s, err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < -1 || n > 65535 {
		return fmt.Errorf("%q: port %q is not a number from 0 to 65535", s, port)
	}
	if strings.ContainsAny(host, " /") {
		return fmt.Errorf("%q: host %q is not a host name or address", s, host)
	}
	return nil
}

// checkNATSURL accepts a comma-separated list of nats, tls, ws or wss
// URLs, each with a host.
func checkNATSURL(s string) error {
	for _, raw := range strings.Split(s, ",") {
		raw = strings.TrimSpace(raw)
		u, err := url.Parse(raw)
		if err != nil {
			return fmt.Errorf("%q is not a URL: %w", raw, err)
		}
		switch u.Scheme {
		case "nats", "tls", "ws", "wss":
		default:
			return fmt.Errorf("%q: scheme must be nats, tls, ws or wss", raw)
		}
		if u.Host == "" {
			return errors.New(strconv.Quote(raw) + ": no host")
		}
	}
	return nil
}
